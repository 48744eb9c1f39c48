"""The evaluation report: ``report.json`` (every figure with its setting), ``report.md`` with
PNG plots (matplotlib, Agg backend): a side-by-side summary table of the generated sets,
per-class real-vs-generated field distributions, inter-arrival-time CDFs and class-fidelity
confusion matrices."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen.atomic import atomic_file
from pytrafgen.evaluate.evalset import EvalSet
from pytrafgen.evaluate.fidelity import NUMERIC_FIELDS, field_values

MAX_PLOTTED_CLASSES = 16


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def _mean_over_detectors(utility: dict[str, Any], regime: str) -> float | None:
    scores = [s.get(regime) for s in (_get(utility, "macro_f1") or {}).values()]
    scores = [s for s in scores if s is not None]
    return float(np.mean(scores)) if scores else None


SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("compliance_packets_final", "packet compliance (final)"),
    ("compliance_packets_raw", "packet compliance (raw)"),
    ("compliance_flows_final", "flow compliance (final)"),
    ("tshark_pass", "tshark pass"),
    ("emd_mean", "EMD (mean)"),
    ("jsd_mean", "JSD (mean)"),
    ("coverage", "coverage (k=5)"),
    ("density", "density (k=5)"),
    ("exact_copy_share", "exact copies of train"),
    ("utility_real", "macro-F1 real"),
    ("utility_real_plus_gen", "macro-F1 real+gen"),
    ("utility_tstr", "macro-F1 TSTR"),
    ("utility_scarce", "macro-F1 scarce"),
    ("utility_scarce_plus_gen", "macro-F1 scarce+gen"),
    ("class_fidelity_f1", "class-fidelity macro-F1"),
)


def summarise(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The headline figures of one generated set (settings stay in the full metrics)."""
    util = metrics.get("utility") or {}
    return {
        "compliance_packets_final": _get(metrics, "compliance", "final", "packet_pass_rate"),
        "compliance_packets_raw": _get(metrics, "compliance", "raw", "packet_pass_rate"),
        "compliance_flows_final": _get(metrics, "compliance", "final", "flow_pass_rate"),
        "tshark_pass": _get(metrics, "compliance", "tshark", "pass_rate"),
        "emd_mean": _get(metrics, "fidelity", "emd_mean"),
        "jsd_mean": _get(metrics, "fidelity", "jsd_mean"),
        "coverage": _get(metrics, "diversity", "coverage_mean"),
        "density": _get(metrics, "diversity", "density_mean"),
        "exact_copy_share": _get(metrics, "memorisation", "exact_copy_share"),
        "utility_real": _mean_over_detectors(util, "real"),
        "utility_real_plus_gen": _mean_over_detectors(util, "real+generated"),
        "utility_tstr": _mean_over_detectors(util, "generated"),
        "utility_scarce": _mean_over_detectors(util, "scarce"),
        "utility_scarce_plus_gen": _mean_over_detectors(util, "scarce+generated"),
        "class_fidelity_f1": _get(metrics, "class_fidelity", "macro_f1"),
    }


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


MATPLOTLIB_MISSING = ("plots not drawn: matplotlib is not installed (pip install 'pytrafgen[report]'); "
                      "every figure is in report.json and the tables")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    with atomic_file(path) as fh:
        fig.savefig(fh, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)


def plot_fields(real: EvalSet, gens: dict[str, EvalSet], class_index: int, path: Path) -> None:
    """Histograms of every numeric fidelity field, real against each generated set."""
    plt = _plt()
    fields = list(NUMERIC_FIELDS)
    cols = 4
    rows = math.ceil(len(fields) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows))
    rv = field_values(real, class_index)
    gvs = {name: field_values(g, class_index) for name, g in gens.items()}
    for ax, name in zip(np.ravel(axes), fields, strict=False):
        values = [rv[name]] + [gv[name] for gv in gvs.values()]
        joined = np.concatenate([v for v in values if len(v)]) if any(len(v) for v in values) else np.zeros(1)
        bins = np.histogram_bin_edges(joined, bins=30)
        if len(rv[name]):
            ax.hist(rv[name], bins=bins, density=True, alpha=0.5, label="real", color="black")
        for gname, gv in gvs.items():
            if len(gv[name]):
                ax.hist(gv[name], bins=bins, density=True, histtype="step", linewidth=1.5, label=gname)
        ax.set_title(name, fontsize=9)
    for ax in np.ravel(axes)[len(fields):]:
        ax.axis("off")
    np.ravel(axes)[0].legend(fontsize=7)
    fig.suptitle(f"{real.classes[class_index]}: real vs generated field distributions")
    fig.tight_layout()
    _save(fig, path)


def plot_iat_cdfs(real: EvalSet, gens: dict[str, EvalSet], classes: list[int], path: Path) -> None:
    """Empirical CDFs of log inter-arrival times, one panel per class."""
    plt = _plt()
    cols = min(4, max(1, len(classes)))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, c in zip(np.ravel(axes), classes, strict=False):
        for name, es, style in [("real", real, "k-")] + [(n, g, "-") for n, g in gens.items()]:
            x = np.sort(field_values(es, c)["log_iat_us"])
            if len(x):
                ax.plot(x, np.arange(1, len(x) + 1) / len(x), style, label=name, linewidth=1.2)
        ax.set_title(real.classes[c], fontsize=9)
        ax.set_xlabel("log1p(IAT µs)", fontsize=8)
    for ax in np.ravel(axes)[len(classes):]:
        ax.axis("off")
    np.ravel(axes)[0].legend(fontsize=7)
    fig.suptitle("inter-arrival time CDFs")
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(confusion: dict[str, Any], title: str, path: Path) -> None:
    plt = _plt()
    matrix = np.asarray(confusion.get("matrix") or [[0]], np.float64)
    names = confusion.get("classes") or [""]
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.5 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted by the real-trained classifier")
    ax.set_ylabel("requested class")
    for (i, j), v in np.ndenumerate(matrix):
        if v:
            ax.text(j, i, int(v), ha="center", va="center", fontsize=6)
    ax.set_title(title)
    _save(fig, path)


def plot_summary(summary: dict[str, dict[str, float | None]], path: Path) -> None:
    plt = _plt()
    keys = ["compliance_packets_final", "coverage", "class_fidelity_f1", "utility_tstr"]
    names = list(summary)
    fig, ax = plt.subplots(figsize=(max(5, 1.5 * len(names) * len(keys) / 2), 3.5))
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        vals = [summary[name].get(key) or 0.0 for key in keys]
        ax.bar(np.arange(len(keys)) + k * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(keys)) + width * (len(names) - 1) / 2, keys, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title("headline figures (higher is better)")
    _save(fig, path)


def write_report(out: Path, real: EvalSet, gens: dict[str, EvalSet], results: dict[str, Any],
                 plots: bool = True) -> dict[str, Any]:
    """Write report.json, report.md and the PNGs under ``out``; return the JSON document."""
    out.mkdir(parents=True, exist_ok=True)
    summary = {name: summarise(r["metrics"]) for name, r in results["generated"].items()}
    results["summary"] = summary
    if plots and importlib.util.find_spec("matplotlib") is None:
        # plots are optional (the `report` extra): every figure is still in the JSON and tables
        plots = False
        results["plots_not_drawn"] = MATPLOTLIB_MISSING
        print(f"pytrafgen: {MATPLOTLIB_MISSING}", file=sys.stderr)
    with atomic_file(out / "report.json", "w") as fh:
        json.dump(results, fh, indent=1, default=_json_default)
    images: dict[str, str] = {}
    if plots:
        plot_summary(summary, out / "summary.png")
        images["summary"] = "summary.png"
        asked = sorted({int(c) for g in gens.values() for c in np.unique(g.labels) if c >= 0})
        shown = [c for c in asked if (real.labels == c).any()][:MAX_PLOTTED_CLASSES]
        if shown:
            plot_iat_cdfs(real, gens, shown, out / "iat_cdf.png")
            images["iat"] = "iat_cdf.png"
        for c in shown:
            file = f"fields_{_safe(real.classes[c])}.png"
            plot_fields(real, gens, c, out / file)
            images[f"fields:{real.classes[c]}"] = file
        for name, r in results["generated"].items():
            confusion = _get(r, "metrics", "class_fidelity", "confusion")
            if confusion and confusion.get("matrix"):
                file = f"confusion_{_safe(name)}.png"
                plot_confusion(confusion, f"class fidelity: {name}", out / file)
                images[f"confusion:{name}"] = file
    with atomic_file(out / "report.md", "w") as fh:
        fh.write(render_markdown(results, summary, images))
    return results


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def render_markdown(results: dict[str, Any], summary: dict[str, dict[str, float | None]],
                    images: dict[str, str]) -> str:
    lines = ["# pytrafgen evaluation report", ""]
    if results.get("plots_not_drawn"):
        lines += [f"> {results['plots_not_drawn']}", ""]
    s = results.get("settings", {})
    lines += [f"- real: {', '.join(s.get('real_sources', []))} ({results['real']['flows']} test flows, "
              f"{results['real']['packets']} packets)",
              f"- split: {s.get('split', '–')}; seed {s.get('seed', '–')}",
              "- every figure's settings are in report.json next to it", "", "## Side by side", ""]
    names = list(summary)
    lines.append("| metric | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for key, label in SUMMARY_COLUMNS:
        lines.append(f"| {label} | " + " | ".join(_fmt(summary[n].get(key)) for n in names) + " |")
    ref = results.get("real_reference", {})
    if ref:
        lines += ["", f"Real test split judged by the same rules: packet compliance "
                      f"{_fmt(_get(ref, 'final', 'packet_pass_rate'))}, flow compliance "
                      f"{_fmt(_get(ref, 'final', 'flow_pass_rate'))}, tshark pass "
                      f"{_fmt(_get(ref, 'tshark', 'pass_rate'))}."]
    if "summary" in images:
        lines += ["", f"![summary]({images['summary']})"]
    for name, r in results["generated"].items():
        m = r["metrics"]
        lines += ["", f"## {name}", "", f"{r['flows']} flows, {r['packets']} packets, "
                  f"sources: {', '.join(r.get('sources', []))}", ""]
        fid = m.get("fidelity") or {}
        div = m.get("diversity") or {}
        comp = _get(m, "compliance", "final", "per_class") or {}
        cf = m.get("class_fidelity") or {}
        lines += ["| class | packet compliance | flow compliance | EMD | JSD | coverage | density | "
                  "class recall |", "|---|---|---|---|---|---|---|---|"]
        for cls in sorted(set(comp) | set(_get(fid, "per_class") or {})):
            lines.append("| " + " | ".join([
                cls, _fmt(_get(comp, cls, "packet_pass_rate")), _fmt(_get(comp, cls, "flow_pass_rate")),
                _fmt(_get(fid, "per_class", cls, "emd_mean")), _fmt(_get(fid, "per_class", cls, "jsd_mean")),
                _fmt(_get(div, "per_class", cls, "coverage")), _fmt(_get(div, "per_class", cls, "density")),
                _fmt(_get(cf, "per_class_recall", cls))]) + " |")
        failing = sorted(((v.get("pass_rate"), rid) for rid, v in
                          (_get(m, "compliance", "final", "per_rule") or {}).items()
                          if v.get("pass_rate") is not None and v["pass_rate"] < 1.0))[:10]
        if failing:
            lines += ["", "Rules failed most often (final): " + ", ".join(f"{rid} {rate:.4f}"
                                                                           for rate, rid in failing)]
        raw = _get(m, "compliance", "raw") or {}
        if "packet_pass_rate" in raw:
            lines += ["", f"As sampled, before repair (raw): packet compliance {_fmt(raw['packet_pass_rate'])}, "
                          f"flow compliance {_fmt(raw.get('flow_pass_rate'))}."]
        unavailable = _get(m, "utility", "unavailable") or {}
        if unavailable:
            lines += ["", "Utility: detectors that could not run (the others are reported): " + "; ".join(
                f"{det} on {', '.join(sorted(regimes))} ({next(iter(regimes.values()))})"
                for det, regimes in sorted(unavailable.items())) + "."]
        repairs = _get(m, "compliance", "repairs")
        if isinstance(repairs, dict):
            lines += ["", "Repair changed (packets per field): " + (", ".join(
                f"{k} {v}" for k, v in sorted(repairs.items())) or "nothing") + "."]
        if f"confusion:{name}" in images:
            lines += ["", f"![confusion {name}]({images[f'confusion:{name}']})"]
    if "iat" in images:
        lines += ["", "## Inter-arrival times", "", f"![iat]({images['iat']})"]
    field_imgs = [(k.split(":", 1)[1], v) for k, v in images.items() if k.startswith("fields:")]
    if field_imgs:
        lines += ["", "## Field distributions per class", ""]
        for cls, file in field_imgs:
            lines += [f"### {cls}", "", f"![{cls}]({file})", ""]
    return "\n".join(lines) + "\n"
