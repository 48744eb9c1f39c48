"""Evaluate one or two detectors on labeled captures: per-class precision/recall/F1,
macro-F1, confusion matrices (PNG when matplotlib is installed); two detectors side by side
(e.g. trained on real flows only vs real + generated)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen.detect.data import load_labeled
from pytrafgen.detect.metrics import classification_metrics
from pytrafgen.detect.model import Detector
from pytrafgen.errors import PytrafgenError


def detector_name(detector: Detector, path: Path) -> str:
    generated = detector.header.training.get("generated_flows", 0)
    return f"{path.name} ({detector.header.kind}, {'real + generated' if generated else 'real only'})"


def evaluate_detectors(detectors: Sequence[tuple[str, Detector]], captures: Sequence[Path],
                       manifest: Mapping[str, tuple[str, str]]) -> dict[str, Any]:
    """Figures of each detector on the labeled ``captures`` (all flows of each file carry the
    class the manifest gives it). Every labeled class must be one the detector knows."""
    results: dict[str, Any] = {"captures": [str(p) for p in captures], "detectors": {}}
    cache: dict[Any, Any] = {}
    for name, det in detectors:
        settings = det.header.settings
        if settings not in cache:
            cache[settings] = load_labeled(captures, manifest, settings)
        flows = cache[settings]
        labels = flows.labels()
        unknown = sorted({c for c in labels if c is not None} - set(det.header.classes))
        if unknown:
            raise PytrafgenError(f"the labels name classes the detector {name} was not trained on: "
                                 f"{', '.join(unknown)} (it knows {', '.join(det.header.classes)})")
        index = {c: i for i, c in enumerate(det.header.classes)}
        y_true = np.array([index[c] for c in labels if c is not None], np.int64)
        inputs = np.concatenate([det.encode(cap.packets, cap.flows) for cap in flows.captures])
        known = np.array([c is not None for c in labels])
        proba = det.predict_proba(inputs[known])
        metrics = classification_metrics(y_true, proba.argmax(axis=1), det.header.classes)
        metrics["kind"] = det.header.kind
        metrics["training"] = det.header.training
        results["detectors"][name] = metrics
    return results


def _plot_confusion(metrics: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(metrics["confusion"], np.float64)
    rows = confusion.sum(axis=1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    classes = metrics["classes"]
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(classes), 1.0 + 0.5 * len(classes)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (labels)")
    ax.set_title(title, fontsize=9)
    for i in range(len(classes)):
        for j in range(len(classes)):
            if confusion[i, j]:
                ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center", fontsize=6,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_markdown(results: dict[str, Any], plots: dict[str, str], plot_note: str) -> str:
    names = list(results["detectors"])
    lines = ["# Detector evaluation", "", "Captures: " + ", ".join(f"`{c}`" for c in results["captures"]), ""]
    header = "| class | support | " + " | ".join(f"P / R / F1 — {n}" for n in names) + " |"
    lines += [header, "|---|---:|" + "---|" * len(names)]
    first = results["detectors"][names[0]]
    all_classes = list(dict.fromkeys(c for n in names for c in results["detectors"][n]["classes"]))
    for c in all_classes:
        cells = []
        support = 0
        for n in names:
            pc = results["detectors"][n]["per_class"].get(c)
            if pc is None:
                cells.append("—")
                continue
            support = max(support, pc["support"])
            cells.append(f"{pc['precision']:.3f} / {pc['recall']:.3f} / {pc['f1']:.3f}")
        lines.append(f"| {c} | {support} | " + " | ".join(cells) + " |")
    lines.append("| **macro-F1** | " + str(first["flows"]) + " | "
                 + " | ".join(f"**{results['detectors'][n]['macro_f1']:.4f}**" for n in names) + " |")
    lines.append("| accuracy | | " + " | ".join(f"{results['detectors'][n]['accuracy']:.4f}" for n in names) + " |")
    if len(names) == 2:
        delta = results["detectors"][names[1]]["macro_f1"] - results["detectors"][names[0]]["macro_f1"]
        lines += ["", f"macro-F1 of the second minus the first: {delta:+.4f}"]
    lines += ["", "macro-F1 averages the classes present in the labels.", ""]
    if plots:
        lines += [f"![confusion matrix, {n}]({p})" for n, p in plots.items()]
    else:
        lines.append(plot_note)
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write report.md, report.json and confusion-matrix PNGs into ``out``; returns the paths
    written and a note when plots could not be drawn."""
    from pytrafgen.atomic import atomic_dir

    try:
        import matplotlib  # noqa: F401

        plot_note = ""
    except ImportError:
        plot_note = "plots not drawn: matplotlib is not installed (pip install matplotlib)"
    out = Path(out)
    if out.exists() and not (out / "report.json").is_file():
        raise PytrafgenError(f"{out}: exists and is not a detector report; refusing to replace it")
    plots: dict[str, str] = {}
    with atomic_dir(out) as tmp:
        if not plot_note:
            for i, (name, metrics) in enumerate(results["detectors"].items()):
                plots[name] = f"confusion_{i + 1}.png"
                _plot_confusion(metrics, tmp / plots[name], name)
        (tmp / "report.json").write_text(json.dumps(results, indent=2))
        (tmp / "report.md").write_text(report_markdown(results, plots, plot_note))
    return {"report": str(out / "report.md"), "plots": [str(out / p) for p in plots.values()], "note": plot_note}


__all__ = ["detector_name", "evaluate_detectors", "report_markdown", "write_report"]
