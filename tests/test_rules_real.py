"""Rules are fair to real traffic: every rule of every installed protocol passes 100 % on every
real capture, whole and cut into 16-packet flows (as ``tokenize --max-flow-packets 16`` cuts
them), except the documented cases of ``real_rule_exceptions.json`` (docs/rules.md), which must
fail exactly where listed. Runs over the bundled corpus (in the repository) and over every
capture of ../shared/data (lab and public) where present."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import ALL_SHARED, SHARED_DATA, shared_ids

import pytrafgen
from pytrafgen.evaluate.compliance import run_rules
from pytrafgen.evaluate.evalset import evalset_from_tables
from pytrafgen.plugins import get_registry

CUT = 16
CORPUS = Path(pytrafgen.__file__).parent / "data" / "corpus"
EXCEPTIONS = {e["file"]: (set(e["rules"]), e["reason"]) for e in
              json.loads((Path(__file__).with_name("real_rule_exceptions.json")).read_text())["exceptions"]}


def corpus_captures() -> list[Path]:
    with (CORPUS / "manifest.csv").open(newline="") as fh:
        return [CORPUS / r["file"] for r in csv.DictReader(fh)]


def failing_rules(path: Path, cut: int) -> dict[str, str]:
    es = evalset_from_tables([(pytrafgen.read_pcap(path), None)], path.name, max_flow_packets=cut)
    out = {}
    for rule_id, figures in run_rules(es, protocols=get_registry().protocols)["per_rule"].items():
        if "error" in figures:
            out[rule_id] = figures["error"]
        elif figures["violating"]:
            out[rule_id] = f"{figures['violating']} of {figures['applicable']}"
    return out


@pytest.mark.parametrize("cut", [0, CUT], ids=["whole", f"cut{CUT}"])
@pytest.mark.parametrize("path", corpus_captures(), ids=lambda p: p.name)
def test_bundled_corpus_passes_every_rule(path: Path, cut: int) -> None:
    assert failing_rules(path, cut) == {}


@pytest.mark.skipif(not ALL_SHARED, reason=f"shared captures not found at {SHARED_DATA} (set PYTRAFGEN_SHARED_DATA)")
@pytest.mark.parametrize("cut", [0, CUT], ids=["whole", f"cut{CUT}"])
@pytest.mark.parametrize("path", ALL_SHARED, ids=shared_ids(ALL_SHARED))
def test_shared_captures_pass_every_rule_but_documented_cases(path: Path, cut: int) -> None:
    key = f"{path.parent.name}/{path.name}" if path.parent.name != "captures" else path.name
    expected, reason = EXCEPTIONS.get(key, (set(), ""))
    failing = failing_rules(path, cut)
    assert set(failing) == expected, f"{failing} (documented: {sorted(expected)}: {reason})"
