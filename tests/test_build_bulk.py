"""The bulk build preparation (distinct 5-tuples and flow start times in C++,
``csrc/build_prep.hpp``) writes the same bytes as the per-flow Python it replaced
(``tests/build_reference.py``) on the bundled corpus: as read, tiled so that flows collide and
must move to other ports, and with generated-like flows that all start at time 0."""

from __future__ import annotations

import csv
from pathlib import Path

import build_reference
import numpy as np
import pytest
from conftest import BUNDLED_CORPUS

from pytrafgen import build
from pytrafgen.address_plan import AddressPlan
from pytrafgen.capture import read_pcap
from pytrafgen.flows import assemble_flows
from pytrafgen.records import FieldRecords
from pytrafgen.records_from_packets import records_and_origin


@pytest.fixture(scope="module")
def corpus() -> tuple[FieldRecords, AddressPlan]:
    with (BUNDLED_CORPUS / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    classes = sorted({r["class"] for r in rows})
    parts, plans = [], []
    for row in rows:
        table = read_pcap(BUNDLED_CORPUS / row["file"])
        flows = assemble_flows(table)
        labels = np.full(len(flows), classes.index(row["class"]), np.int16)
        parts.append(records_and_origin(table, flows, labels, classes)[0])
        plans.append(AddressPlan.learn(table, flows, labels, classes))
    plan = AddressPlan(classes={k: v for p in plans for k, v in p.classes.items() if k != "*"})
    return FieldRecords.concat(parts), plan


def _tiled(records: FieldRecords, reps: int) -> FieldRecords:
    return FieldRecords.concat([records] * reps)


def _from_time_zero(records: FieldRecords) -> FieldRecords:
    """Every flow moved to start at 0, as a generator's flows do."""
    flow = records.packets["flow"]
    first = np.full(records.n_flows, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, flow, records.packets["ts_ns"])
    packets = {**records.packets, "ts_ns": records.packets["ts_ns"] - first[flow]}
    return FieldRecords(packets, records.flows, records.blob, records.classes)


def _write_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, records: FieldRecords, plan: AddressPlan,
                **kwargs: object) -> tuple[Path, Path]:
    bulk = tmp_path / "bulk.pcap"
    build.write_records(bulk, records, plan, seed=7, **kwargs)  # type: ignore[arg-type]
    with monkeypatch.context() as m:
        m.setattr(build, "_distinct_five_tuples", build_reference._distinct_five_tuples)
        m.setattr(build, "_timestamps", build_reference._timestamps)
        previous = tmp_path / "previous.pcap"
        build.write_records(previous, records, plan, seed=7, **kwargs)  # type: ignore[arg-type]
    return bulk, previous


def _same_files(a: Path, b: Path) -> None:
    assert a.read_bytes() == b.read_bytes()
    assert Path(f"{a}.flows.csv").read_bytes() == Path(f"{b}.flows.csv").read_bytes()


@pytest.mark.parametrize("reps", [1, 3])
def test_bulk_build_writes_the_same_pcap_as_the_per_flow_path(
        corpus: tuple[FieldRecords, AddressPlan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reps: int) -> None:
    records, plan = corpus
    records = _tiled(records, reps)
    bulk, previous = _write_both(tmp_path, monkeypatch, records, plan)
    _same_files(bulk, previous)


def test_tiled_corpus_moves_colliding_flows_to_other_ports(corpus: tuple[FieldRecords, AddressPlan]) -> None:
    """The tiled case above does exercise the port search: flows repeat connections there."""
    records, plan = corpus
    records = _tiled(records, 3)
    ends = plan.assign(records, np.random.default_rng(0))
    moved = build._distinct_five_tuples(records.flows, ends, seed=0)["client_port"]
    assert (moved != records.flows["client_port"]).sum() > 0
    assert np.array_equal(moved, build_reference._distinct_five_tuples(records.flows, ends, seed=0)["client_port"])


def test_generated_like_flows_get_the_same_arrivals(
        corpus: tuple[FieldRecords, AddressPlan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records, plan = corpus
    bulk, previous = _write_both(tmp_path, monkeypatch, _from_time_zero(_tiled(records, 2)), plan, start_ns=10**18)
    _same_files(bulk, previous)


def test_flow_spread_gives_the_same_timestamps(
        corpus: tuple[FieldRecords, AddressPlan], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records, plan = corpus
    bulk, previous = _write_both(tmp_path, monkeypatch, records, plan, flow_spread_s=30.0, start_ns=5)
    _same_files(bulk, previous)
