"""``report.html``: the evaluation report as one self-contained page — plots inline as base64
PNG, every table, what each figure means, per-class views and the compliance rules with their
descriptions — to open in any browser, mail or archive without its folder.

Rendering is driven by the data: every headline figure in ``summary`` shows (known ones with
their meaning, new ones under their key in words), and the per-detector utility table takes
whatever detectors and training regimes ``report.json`` holds.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytrafgen.evaluate.report import METRIC_MEANING, NO_DATA, _fmt, _get, summary_rows

MAX_RULES_LISTED = 15

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 2px solid #ddd; }
h3 { margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .92rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; vertical-align: top; }
th { background: #f0f3f7; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.meaning { color: #444; font-size: .85rem; max-width: 36rem; }
.nodata { color: #777; font-style: italic; } .note { color: #555; font-size: .9rem; }
.error { color: #a40000; } img { max-width: 100%; border: 1px solid #eee; margin: .5rem 0; }
nav a { margin-right: 1rem; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any) -> str:
    text = _fmt(value)
    return f'<td class="num">{_e(text)}</td>' if text != "–" else f'<td class="num nodata">{NO_DATA}</td>'


def _table(header: list[str], rows: list[str], empty: str = NO_DATA) -> str:
    if not rows:
        return f'<p class="nodata">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _image(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return f'<p class="nodata">{NO_DATA} ({_e(alt)}: not drawn)</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'




def _real_cell(real_values: dict[str, Any], key: str) -> str:
    if key not in real_values:  # a figure comparing generated with real has no value for the real side
        return '<td class="num nodata">n/a</td>'
    return _num(real_values[key])


def _summary_section(results: dict[str, Any], summary: dict[str, dict[str, Any]], images: dict[str, Path]) -> str:
    names = list(summary)
    ref = results.get("real_reference") or {}
    real_values = {"compliance_packets_final": _get(ref, "final", "packet_pass_rate"),
                   "compliance_flows_final": _get(ref, "final", "flow_pass_rate"),
                   "tshark_pass": _get(ref, "tshark", "pass_rate")}
    rows = []
    for key, label in summary_rows(summary):
        meaning = METRIC_MEANING.get(key, "see report.json")
        rows.append(f"<tr><th>{_e(label)}</th>" + "".join(_num(summary[n].get(key)) for n in names)
                    + (_real_cell(real_values, key) if ref else "") + f'<td class="meaning">{_e(meaning)}</td></tr>')
    header = ["figure", *names, *(["real test flows"] if ref else []), "what it means"]
    out = ["<h2 id='summary'>Side by side</h2>", _table(header, rows)]
    if "summary" in images:
        out.append(_image(images["summary"], "headline figures"))
    return "".join(out)


def _per_class_rows(m: dict[str, Any], class_counts: dict[str, int]) -> list[str]:
    comp = _get(m, "compliance", "final", "per_class") or {}
    fid = _get(m, "fidelity", "per_class") or {}
    div = _get(m, "diversity", "per_class") or {}
    copies = _get(m, "memorisation", "exact_copy_share_per_class") or {}
    near = _get(m, "memorisation", "near_copy_share_per_class") or {}
    floor = _get(m, "memorisation", "near_copy_share_real_test_per_class") or {}
    recall = _get(m, "class_fidelity", "per_class_recall") or {}
    rows = []
    for cls in sorted(set(comp) | set(fid) | set(div) | set(recall) | {c for c, n in class_counts.items() if n}):
        rows.append(f"<tr><th>{_e(cls)}</th>" + _num(class_counts.get(cls)) + "".join(_num(v) for v in [
            _get(comp, cls, "packet_pass_rate"), _get(comp, cls, "flow_pass_rate"), _get(fid, cls, "emd_mean"),
            _get(fid, cls, "jsd_mean"), _get(div, cls, "coverage"), _get(div, cls, "density"), copies.get(cls),
            near.get(cls), floor.get(cls), recall.get(cls)]) + "</tr>")
    return rows


def _utility_table(m: dict[str, Any]) -> str:
    per_detector = _get(m, "utility", "macro_f1") or {}
    regimes = list(dict.fromkeys(r for scores in per_detector.values() if isinstance(scores, dict) for r in scores))
    rows = [f"<tr><th>{_e(det.replace('_', ' '))}</th>" + "".join(_num(scores.get(r)) for r in regimes) + "</tr>"
            for det, scores in per_detector.items() if isinstance(scores, dict)]
    return _table(["detector", *[f"trained on {r}" for r in regimes]], rows)


def _rules_table(m: dict[str, Any], descriptions: dict[str, str]) -> str:
    per_rule = _get(m, "compliance", "final", "per_rule") or {}
    failing = sorted(((v["pass_rate"], rid, v) for rid, v in per_rule.items()
                      if isinstance(v, dict) and v.get("pass_rate") is not None and v["pass_rate"] < 1.0),
                     key=lambda t: (t[0], t[1]))[:MAX_RULES_LISTED]
    if not per_rule:
        return f'<p class="nodata">{NO_DATA} (compliance was not run)</p>'
    if not failing:
        return "<p>Every rule held on every packet and flow it applies to.</p>"
    rows = [f"<tr><th>{_e(rid)}</th><td>{_e(v.get('protocol', ''))}</td><td>{_e(v.get('scope', ''))}</td>"
            f"<td class='meaning'>{_e(descriptions.get(rid, ''))}</td>" + _num(v.get("applicable"))
            + _num(v.get("violating")) + _num(rate) + "</tr>" for rate, rid, v in failing]
    return ("<p class='note'>Rules sorted by pass rate, lowest first: the pass rate is the share of the "
            "packets (or flows) a rule applies to that satisfy it; <em>violating</em> counts the ones that "
            "do not.</p>" + _table(["rule", "protocol", "scope", "what it checks", "applies to", "violating",
                                    "pass rate"], rows))


def _generated_section(name: str, r: dict[str, Any], images: dict[str, Path], descriptions: dict[str, str]) -> str:
    m = r.get("metrics") or {}
    out = [f"<h2 id='gen-{_e(name)}'>Generated set: {_e(name)}</h2>",
           f"<p>{_e(r.get('flows'))} flows, {_e(r.get('packets'))} packets; sources: "
           f"{_e(', '.join(r.get('sources', [])))}</p>"]
    errors = [f"<li class='error'>{_e(v)}: {_e(res['error'])}</li>" for v, res in m.items()
              if isinstance(res, dict) and "error" in res]
    if errors:
        out.append(f"<p>Metrics that failed:</p><ul>{''.join(errors)}</ul>")
    out += ["<h3>Per class</h3>", _table(
        ["class", "flows generated", "packet compliance", "flow compliance", "EMD", "JSD", "coverage", "density",
         "exact copies of train", "near copies of train", "near copies: real floor", "class recall"],
        _per_class_rows(m, r.get("class_counts") or {}))]
    out += ["<h3>Detector macro-F1 by training data</h3>",
            "<p class='note'>Each detector is tested on the real test flows; the columns say what it was trained "
            "on (real = real training flows; scarce = 10 % of the real attack flows).</p>", _utility_table(m)]
    out += ["<h3>Compliance rules that failed</h3>", _rules_table(m, descriptions)]
    out += ["<h3>Class fidelity</h3>", _image(images.get(f"confusion:{name}"), f"confusion matrix of {name}")]
    return "".join(out)


def render_html(results: dict[str, Any], summary: dict[str, dict[str, Any]], images: dict[str, Path],
                rule_descriptions: Mapping[str, str] | None = None) -> str:
    """The whole page; ``images`` maps report.py's image keys to the PNG files just drawn;
    ``rule_descriptions``: rule id -> description for the failed-rules tables."""
    settings = results.get("settings", {})
    real = results.get("real", {})
    descriptions = dict(rule_descriptions or {})
    generated = results.get("generated", {})
    nav = "".join(f"<a href='#gen-{_e(n)}'>{_e(n)}</a>" for n in generated)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>pytrafgen evaluation report</title><style>{CSS}</style></head><body>",
        "<h1>pytrafgen evaluation report</h1>",
        f"<p>Real test flows: {_e(real.get('flows'))} ({_e(real.get('packets'))} packets) from "
        f"{_e(', '.join(settings.get('real_sources', [])))}<br>Split: {_e(settings.get('split', '–'))}; "
        f"seed {_e(settings.get('seed', '–'))}. Every figure, with the settings it was computed with, is in "
        f"report.json beside this page.</p>",
        f"<nav><a href='#summary'>side by side</a>{nav}<a href='#iat'>inter-arrival times</a>"
        f"<a href='#fields'>fields per class</a></nav>",
    ]
    if results.get("plots_not_drawn"):
        parts.append(f"<p class='note'>{_e(results['plots_not_drawn'])}</p>")
    parts.append(_summary_section(results, summary, images))
    parts += [_generated_section(name, r, images, descriptions) for name, r in generated.items()]
    parts += ["<h2 id='iat'>Inter-arrival times per class</h2>", _image(images.get("iat"), "inter-arrival times")]
    parts.append("<h2 id='fields'>Field distributions per class</h2>")
    field_images = [(key.split(":", 1)[1], path) for key, path in images.items() if key.startswith("fields:")]
    if not field_images:
        parts.append(f'<p class="nodata">{NO_DATA}</p>')
    for cls, path in field_images:
        parts += [f"<h3>{_e(cls)}</h3>", _image(path, f"field distributions of {cls}")]
    parts.append("</body></html>\n")
    return "\n".join(parts)


__all__ = ["render_html"]
