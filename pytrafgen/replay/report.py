"""Compare the effect of the generated attack with the real attack and a benign control, and
write the result as JSON plus a Markdown section.

Verdict, for a scenario with tolerance τ (absolute, or relative to the real value):

* *reproduces the effect*: the generated effect lies within τ of the real attack's, and the
  benign control does not (so the scenario can tell attack from normal traffic);
* *does not reproduce the effect*: the generated effect lies outside τ;
* *inconclusive*: the benign control lies within τ of the real attack too;
* *not compared*: no real capture was given.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytrafgen.atomic import atomic_file
from pytrafgen.errors import ReplayError
from pytrafgen.replay.scenarios import Effect, Scenario, measure
from pytrafgen.replay.senders import Bounds
from pytrafgen.replay.trace import load_trace

ROLES = ("real", "generated", "control")
REPRODUCES = "reproduces the effect"
DOES_NOT = "does not reproduce the effect"
INCONCLUSIVE = "inconclusive: the benign control shows the same effect"
NOT_COMPARED = "not compared: no real attack capture given"


def verdict(scenario: Scenario, effects: dict[str, Effect]) -> tuple[str, bool]:
    """(verdict text, reproduces?) from the measured effects of the roles present."""
    if "real" not in effects or "generated" not in effects:
        return NOT_COMPARED, False
    real = effects["real"].value
    if "control" in effects and scenario.within(effects["control"].value, real):
        return INCONCLUSIVE, False
    if scenario.within(effects["generated"].value, real):
        return REPRODUCES, True
    return DOES_NOT, False


def run_replay(scenario: Scenario, inputs: dict[str, Path], bounds: Bounds,
               on_step: Callable[[str], None] | None = None, repeat: int = 1) -> dict[str, Any]:
    """Measure every given role (``real``, ``generated``, ``control``) and build the report.
    ``repeat``: measurements per role, each in a fresh namespace pair with a fresh target; the
    median run stands (an effect that depends on the machine's load, e.g. a flood's, varies
    from run to run)."""
    if repeat < 1:
        raise ReplayError(f"repeat must be at least 1, got {repeat}")
    effects: dict[str, Effect] = {}
    measured: dict[str, list[float]] = {}
    for role in ROLES:
        if role not in inputs:
            continue
        if on_step is not None:
            on_step(role)
        trace = load_trace(inputs[role])
        runs = sorted((measure(scenario, trace, bounds) for _ in range(repeat)), key=lambda e: e.value)
        effects[role] = runs[(len(runs) - 1) // 2]
        measured[role] = [round(e.value, 4) for e in runs]
    text, reproduces = verdict(scenario, effects)
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "effect": scenario.effect,
        "tolerance": {"value": scenario.tolerance, "relative": scenario.relative,
                      "text": scenario.tolerance_text},
        "bounds": {"max_packets": bounds.max_packets, "timeout_s": bounds.timeout_s,
                   "max_rate_pps": bounds.max_rate_pps, "max_sessions": bounds.max_sessions,
                   "hold_cap_s": bounds.hold_cap_s},
        "repeat": repeat,
        "runs": {role: {"input": str(inputs[role]), "effect": round(effects[role].value, 4),
                        "effects_measured": measured[role], "figures": effects[role].figures}
                 for role in effects},
        "verdict": text,
        "reproduces": reproduces,
        "machine": platform.node(),
        "kernel": platform.release(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def markdown(report: dict[str, Any]) -> str:
    """One report section: the effect per role, the tolerance and the verdict."""
    lines = [
        f"### Replay: {report['scenario']}",
        "",
        f"{report['description']}. Effect measured at the target: **{report['effect']}**; "
        f"tolerance {report['tolerance']['text']}.",
        "",
        "| input | file | effect | figures |",
        "|---|---|---|---|",
    ]
    for role, run in report["runs"].items():
        figures = ", ".join(f"{k} {v}" for k, v in run["figures"].items())
        lines.append(f"| {role} | `{Path(run['input']).name}` | {run['effect']:g} | {figures} |")
    bounds = report["bounds"]
    lines += [
        "",
        f"**Verdict: {report['verdict']}.**",
        "",
        f"Bounds: at most {bounds['max_packets']} packets/messages, {bounds['timeout_s']:g} s of sending, "
        f"{bounds['max_rate_pps']:g} packets/s, {bounds['max_sessions']} sessions held ≤ {bounds['hold_cap_s']:g} s. "
        f"Kernel {report['kernel']}, {report['date']}.",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``replay_<scenario>.json`` and ``.md`` in ``out_dir``, each written atomically."""
    json_path = out_dir / f"replay_{report['scenario']}.json"
    md_path = out_dir / f"replay_{report['scenario']}.md"
    with atomic_file(json_path, "w") as fh:
        json.dump(report, fh, indent=2)
        fh.write("\n")
    with atomic_file(md_path, "w") as fh:
        fh.write(markdown(report))
    return json_path, md_path
