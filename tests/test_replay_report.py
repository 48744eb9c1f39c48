"""run_replay's repeated measurements: the median run of each role stands (no namespaces
needed: the measurement is replaced by canned effects)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytrafgen.errors import ReplayError
from pytrafgen.replay import report, scenarios
from pytrafgen.replay.senders import Bounds


def test_the_median_of_repeated_measurements_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    canned = {"real": [0.9, 0.3, 0.8], "generated": [0.1, 0.7, 0.6], "control": [0.0, 0.5, 0.0]}
    calls: dict[str, int] = {}

    def fake_measure(scenario: scenarios.Scenario, trace: str, bounds: Bounds) -> scenarios.Effect:
        i = calls.get(trace, 0)
        calls[trace] = i + 1
        return scenarios.Effect(value=canned[trace][i], figures={"run": i})

    monkeypatch.setattr(report, "load_trace", lambda path: Path(path).name)
    monkeypatch.setattr(report, "measure", fake_measure)
    scenario = scenarios.get_scenario("udp_flood")  # at least 50 % of the real value
    result = report.run_replay(scenario, {role: Path(role) for role in canned}, Bounds(), repeat=3)
    runs = result["runs"]
    assert calls == {"real": 3, "generated": 3, "control": 3} and result["repeat"] == 3
    assert runs["real"]["effect"] == 0.8 and runs["real"]["effects_measured"] == [0.3, 0.8, 0.9]
    assert runs["real"]["figures"] == {"run": 2}  # the median run's own figures
    assert runs["generated"]["effect"] == 0.6 and runs["control"]["effect"] == 0.0
    # one run each would have judged on 0.9 / 0.1: not reproduced; the medians reproduce
    assert result["verdict"] == report.REPRODUCES and result["reproduces"] is True


def test_repeat_below_one_is_refused() -> None:
    with pytest.raises(ReplayError, match="at least 1"):
        report.run_replay(scenarios.get_scenario("udp_flood"), {}, Bounds(), repeat=0)
