"""The evaluation report: ``report.json`` (every figure with its setting), ``report.md`` with
PNG plots (matplotlib, Agg backend) and ``report.html`` (one self-contained page, plots inline,
see report_html.py): a side-by-side summary table of the generated sets, per-class
real-vs-generated field distributions, inter-arrival-time CDFs and class-fidelity confusion
matrices."""

from __future__ import annotations

import importlib.util
import json
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytrafgen.atomic import atomic_file, open_output_dir
from pytrafgen.evaluate.evalset import EvalSet
from pytrafgen.evaluate.fidelity import NUMERIC_FIELDS, field_values

if TYPE_CHECKING:
    from pytrafgen.protocol_spec import ProtocolSpec

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
    ("exact_copy_share_real_floor", "exact copies: real floor"),
    ("near_copy_share", "near copies of train"),
    ("near_copy_share_real_floor", "near copies: real floor"),
    ("utility_real", "macro-F1 real"),
    ("utility_real_plus_gen", "macro-F1 real+gen"),
    ("utility_tstr", "macro-F1 TSTR"),
    ("utility_scarce", "macro-F1 scarce"),
    ("utility_scarce_plus_gen", "macro-F1 scarce+gen"),
    ("class_fidelity_f1", "class-fidelity macro-F1"),
)


# what each headline figure means and which way is better (report.html shows it beside the figure)
METRIC_MEANING: dict[str, str] = {
    "compliance_packets_final": "share of generated packets that break no protocol rule, as written "
                                "(lengths and checksums repaired); higher is better",
    "compliance_packets_raw": "the same before repair, with the generator's own lengths and checksums; higher is better",
    "compliance_flows_final": "share of generated flows with no failing packet and no broken flow rule; higher is better",
    "tshark_pass": "share of packets Wireshark's dissector reads with no malformed mark or expert error; "
                   "higher is better",
    "emd_mean": "earth mover's distance between real and generated field distributions (fields scaled to "
                "the real range, mean over fields and classes); lower is better, 0 = identical",
    "jsd_mean": "Jensen-Shannon divergence of categorical fields (protocol, flags, ports, …); lower is better, "
                "0 = identical, 1 = disjoint",
    "coverage": "share of real test flows with a generated flow among their k nearest neighbours (k = 5); "
                "higher is better",
    "density": "how many real-flow neighbourhoods each generated flow falls in, over k (k = 5); about 1 "
               "matches the real data, above 1 crowds the dense regions",
    "exact_copy_share": "share of generated flows identical to a training flow (memorisation); lower is better, "
                        "down to the real floor",
    "exact_copy_share_real_floor": "share of real test flows (never trained on) identical to a training flow: "
                                   "floods and scans repeat by nature, so this, not zero, is the floor",
    "near_copy_share": "share of generated flows with a training flow's packet sizes and directions and payloads "
                       "within 2 % edits of it (exact copies included); lower is better, down to the real floor",
    "near_copy_share_real_floor": "the same share for the real test flows: the floor for near copies",
    "utility_real": "detector macro-F1 on the real test flows, trained on real training flows only "
                    "(the baseline; mean over five detectors)",
    "utility_real_plus_gen": "detector macro-F1 trained on real + generated flows; above 'macro-F1 real' means "
                             "the generated flows help",
    "utility_tstr": "detector macro-F1 trained on generated flows only, tested on real ones "
                    "(train synthetic, test real); higher is better",
    "utility_scarce": "detector macro-F1 with only 10 % of the real attack flows (scarce data)",
    "utility_scarce_plus_gen": "the same, with generated flows added; above 'macro-F1 scarce' means they help",
    "class_fidelity_f1": "macro-F1 of a classifier trained on real flows at telling the generated flows' "
                         "requested classes; higher is better",
}


def metric_label(key: str) -> str:
    """A figure's human name: its SUMMARY_COLUMNS label, else the key in words
    (``compliance_flows_raw`` → "flow compliance (raw)")."""
    known = dict(SUMMARY_COLUMNS).get(key)
    if known:
        return known
    if ": " in key:  # a plugin validator's figure: its name as registered, the figure in words
        validator, figure = key.split(": ", 1)
        return f"{validator}: {figure.replace('_', ' ')}"
    parts = key.split("_")
    if len(parts) == 3 and parts[0] == "compliance":
        return f"{parts[1].rstrip('s')} compliance ({parts[2]})"
    return key.replace("_", " ")


def summary_rows(summary: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, label) of every headline figure in ``summary``: the known ones in their order, then
    any other key a validator or summarise() added, so new figures show without code here."""
    known = [key for key, _ in SUMMARY_COLUMNS]
    extra = [k for s in summary.values() for k in s if k not in known]
    return [(k, metric_label(k)) for k in [*known, *dict.fromkeys(extra)]]


# the validators whose headline figures summarise() picks by name; any other validator (a
# plugin's) shows its top-level numbers as "<validator>: <figure>"
CORE_VALIDATORS = ("compliance", "fidelity", "diversity", "memorisation", "utility", "class_fidelity")


def plugin_figures(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The top-level numeric figures of every validator that is not a core one, keyed
    ``"<validator>: <figure>"`` (a validator that raised has none; its error is listed apart)."""
    out: dict[str, float | None] = {}
    for vname, figures in metrics.items():
        if vname in CORE_VALIDATORS or not isinstance(figures, dict) or "error" in figures:
            continue
        for key, value in figures.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[f"{vname}: {key}"] = float(value)
    return out


def evaluation_errors(results: dict[str, Any]) -> list[str]:
    """Every validator and compliance rule that raised, one line each (naming the set, the
    validator or rule and the error): the CLI prints them and ``--strict`` fails on them."""
    errors: list[str] = []

    def rule_errors(where: str, compliance: Any) -> None:
        for stage in ("final", "raw"):
            for rid, figures in (_get(compliance, stage, "per_rule") or {}).items():
                if isinstance(figures, dict) and "error" in figures:
                    errors.append(f"{where}: rule {rid} ({figures.get('protocol', '?')}, {stage}) raised "
                                  f"{figures['error']}")

    if results.get("real_reference"):
        rule_errors("real test split", results["real_reference"])
    for gname, r in results.get("generated", {}).items():
        for vname, figures in (r.get("metrics") or {}).items():
            if isinstance(figures, dict) and "error" in figures:
                errors.append(f"{gname}: validator {vname} raised {figures['error']}")
            elif vname == "compliance":
                rule_errors(gname, figures)
    return errors


def summarise(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The headline figures of one generated set (settings stay in the full metrics), plus
    the top-level figures of plugin validators (``plugin_figures``)."""
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
        "exact_copy_share_real_floor": _get(metrics, "memorisation", "exact_copy_share_real_test"),
        "near_copy_share": _get(metrics, "memorisation", "near_copy_share"),
        "near_copy_share_real_floor": _get(metrics, "memorisation", "near_copy_share_real_test"),
        "utility_real": _mean_over_detectors(util, "real"),
        "utility_real_plus_gen": _mean_over_detectors(util, "real+generated"),
        "utility_tstr": _mean_over_detectors(util, "generated"),
        "utility_scarce": _mean_over_detectors(util, "scarce"),
        "utility_scarce_plus_gen": _mean_over_detectors(util, "scarce+generated"),
        "class_fidelity_f1": _get(metrics, "class_fidelity", "macro_f1"),
        **plugin_figures(metrics),
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


NO_DATA = "no data"


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, NO_DATA, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_fields(real: EvalSet, gens: dict[str, EvalSet], class_index: int, path: Path) -> None:
    """Histograms of every numeric fidelity field, real against each generated set."""
    plt = _plt()
    fields = list(NUMERIC_FIELDS)
    cols = 4
    rows = math.ceil(len(fields) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.0 * rows))
    rv = field_values(real, class_index)
    gvs = {name: field_values(g, class_index) for name, g in gens.items()}
    legend_ax = None
    for ax, name in zip(np.ravel(axes), fields, strict=False):
        ax.set_title(NUMERIC_FIELDS[name], fontsize=9)
        values = [rv[name]] + [gv[name] for gv in gvs.values()]
        if not any(len(v) for v in values):
            _no_data(ax)
            continue
        bins = np.histogram_bin_edges(np.concatenate([v for v in values if len(v)]), bins=30)
        if len(rv[name]):
            ax.hist(rv[name], bins=bins, density=True, alpha=0.5, label="real", color="black")
        for gname, gv in gvs.items():
            if len(gv[name]):
                ax.hist(gv[name], bins=bins, density=True, histtype="step", linewidth=1.5, label=gname)
        ax.set_ylabel("density", fontsize=8)
        legend_ax = legend_ax or ax
    for ax in np.ravel(axes)[len(fields):]:
        ax.axis("off")
    if legend_ax is not None:
        legend_ax.legend(fontsize=7)
    fig.suptitle(f"{real.classes[class_index]}: real vs generated field distributions")
    fig.tight_layout()
    _save(fig, path)


def plot_iat_cdfs(real: EvalSet, gens: dict[str, EvalSet], classes: list[int], path: Path) -> None:
    """Empirical CDFs of log inter-arrival times, one panel per class."""
    plt = _plt()
    cols = min(4, max(1, len(classes)))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    legend_ax = None
    for ax, c in zip(np.ravel(axes), classes, strict=False):
        ax.set_title(real.classes[c], fontsize=9)
        drawn = False
        for name, es, style in [("real", real, "k-")] + [(n, g, "-") for n, g in gens.items()]:
            x = np.sort(field_values(es, c)["log_iat_us"])
            if len(x):
                ax.plot(x, np.arange(1, len(x) + 1) / len(x), style, label=name, linewidth=1.2)
                drawn = True
        if not drawn:  # single-packet flows only: no gap inside a flow to measure
            _no_data(ax)
            continue
        ax.set_xlabel("inter-arrival time, log1p(µs)", fontsize=8)
        ax.set_ylabel("share of packets", fontsize=8)
        legend_ax = legend_ax or ax
    for ax in np.ravel(axes)[len(classes):]:
        ax.axis("off")
    if legend_ax is not None:
        legend_ax.legend(fontsize=7)
    fig.suptitle("inter-arrival times inside flows (cumulative share)")
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(confusion: dict[str, Any], title: str, path: Path) -> None:
    plt = _plt()
    matrix = np.asarray(confusion.get("matrix") or [[0]], np.float64)
    names = confusion.get("classes") or [""]
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(4.5, 0.5 * len(names) + 2.5)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the requested class's flows")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("class predicted by a classifier trained on real flows")
    ax.set_ylabel("class the generator was asked for")
    for (i, j), v in np.ndenumerate(matrix):
        if v:  # white on the dark cells, black on the light ones
            ax.text(j, i, int(v), ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    _save(fig, path)


SUMMARY_PLOT_KEYS = ("compliance_packets_final", "tshark_pass", "coverage", "class_fidelity_f1", "utility_tstr")


def plot_summary(summary: dict[str, dict[str, float | None]], path: Path) -> None:
    import textwrap

    plt = _plt()
    keys = list(SUMMARY_PLOT_KEYS)
    names = list(summary)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(keys) * max(1, len(names)) / 1.5), 3.8))
    width = 0.8 / max(1, len(names))
    for k, name in enumerate(names):
        x = np.arange(len(keys)) + k * width
        vals = [summary[name].get(key) for key in keys]
        ax.bar(x, [v or 0.0 for v in vals], width, label=name)
        for xi, v in zip(x, vals, strict=True):
            ax.text(xi, (v or 0.0) + 0.02, NO_DATA if v is None else f"{v:.2f}", ha="center", va="bottom",
                    fontsize=7, rotation=90 if v is None else 0, color="0.4" if v is None else "black")
    ax.set_xticks(np.arange(len(keys)) + width * (len(names) - 1) / 2,
                  [textwrap.fill(metric_label(key), 16) for key in keys], fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("score (0–1)")
    ax.legend(fontsize=8)
    ax.set_title("headline figures (higher is better)")
    fig.tight_layout()
    _save(fig, path)


def write_report(out: Path, real: EvalSet, gens: dict[str, EvalSet], results: dict[str, Any],
                 plots: bool = True, protocols: Mapping[str, ProtocolSpec] | None = None) -> dict[str, Any]:
    """Write report.json, report.md, report.html (self-contained: the plots inline) and the PNGs
    under ``out``; return the JSON document. ``protocols``: the specs whose rule descriptions
    the failed-rules tables show (default: the real set's, ``EvalSet.protocols``)."""
    from pytrafgen.evaluate.compliance import all_rules

    open_output_dir(out)
    summary = {name: summarise(r["metrics"]) for name, r in results["generated"].items()}
    results["summary"] = summary
    results["errors"] = evaluation_errors(results)
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
    from pytrafgen.evaluate.report_html import render_html

    with atomic_file(out / "report.html", "w") as fh:
        if protocols is None and real is not None:
            protocols = real.protocols
        descriptions = {rule.id: rule.description for rule in all_rules(protocols or {})}
        fh.write(render_html(results, summary, {key: out / file for key, file in images.items()}, descriptions))
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
    for key, label in summary_rows(summary):
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
            lines += ["", "Rules with the lowest pass rates (final; pass rate = share of the packets or flows "
                          "a rule applies to that satisfy it): " + ", ".join(f"{rid} {rate:.4f}"
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
    errors = results.get("errors") or []
    if errors:
        lines += ["", "## Errors", "", "Validators and rules that raised (their figures are missing above):", ""]
        lines += [f"- {e}" for e in errors]
    if "iat" in images:
        lines += ["", "## Inter-arrival times", "", f"![iat]({images['iat']})"]
    field_imgs = [(k.split(":", 1)[1], v) for k, v in images.items() if k.startswith("fields:")]
    if field_imgs:
        lines += ["", "## Field distributions per class", ""]
        for cls, file in field_imgs:
            lines += [f"### {cls}", "", f"![{cls}]({file})", ""]
    return "\n".join(lines) + "\n"
