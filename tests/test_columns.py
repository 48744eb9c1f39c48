"""Columns are written once (csrc/columns.hpp): what _core exports is what the reader, the flow
assembler, the decoder and the builder produce and take, what capture/flows/records list, what
the stubs declare, and what docs/architecture.md documents."""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from pytrafgen import _core
from pytrafgen.capture import PACKET_COLUMNS as TABLE_COLUMNS
from pytrafgen.capture import PacketTable, pcap_bytes, read_pcap, write_pcap
from pytrafgen.flows import FLOW_COLUMNS as FLOW_TABLE_COLUMNS
from pytrafgen.flows import FLOW_PACKET_COLUMNS, FlowTable, assemble_flows
from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords
from pytrafgen.records_from_packets import records_from_packets

ROOT = Path(__file__).resolve().parents[1]
EXPORTS = ("PACKET_COLUMNS", "FLOW_PACKET_COLUMNS", "FLOW_COLUMNS", "RECORD_PACKET_COLUMNS", "RECORD_FLOW_COLUMNS")


def exported(name: str) -> dict[str, tuple[np.dtype, int]]:
    return {col: (np.dtype(dtype), width) for col, dtype, width in getattr(_core, name)}


def doc_table(section: str) -> dict[str, tuple[np.dtype, int]]:
    """``column -> (dtype, width)`` of the first table under the ``## <section>`` heading."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    body = text[text.index(f"\n## {section}"):]
    body = body[: body.index("\n## ", 1)]
    out: dict[str, tuple[np.dtype, int]] = {}
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("column", "---"):
            continue
        dtype = re.search(r"\b(u?int(8|16|32|64))\b", cells[1])
        assert dtype, f"docs §{section}: no dtype in {line!r}"
        width = re.search(r"\([NFP],\s*(\d+)\)", cells[1])
        for name in cells[0].split(","):
            out[name.strip()] = (np.dtype(dtype.group(1)), int(width.group(1)) if width else 1)
    return out


def test_exports_are_tuples_of_name_dtype_width() -> None:
    for name in EXPORTS:
        cols = getattr(_core, name)
        assert cols and all(isinstance(c, tuple) and len(c) == 3 for c in cols), name
        assert len({c[0] for c in cols}) == len(cols), f"{name}: a column named twice"


def dtypes(name: str) -> dict[str, np.dtype]:
    return {col: dtype for col, (dtype, _) in exported(name).items()}


def test_python_lists_are_the_exported_ones() -> None:
    table_columns = dict(TABLE_COLUMNS)
    assert next(iter(table_columns)) == "data"
    assert table_columns.pop("data") == np.uint8
    assert table_columns == dtypes("PACKET_COLUMNS")
    assert [f.name for f in fields(PacketTable) if f.name != "skipped"] == list(TABLE_COLUMNS)
    assert dict(FLOW_PACKET_COLUMNS) == dtypes("FLOW_PACKET_COLUMNS")
    assert dict(FLOW_TABLE_COLUMNS) == dtypes("FLOW_COLUMNS")
    assert [f.name for f in fields(FlowTable)] == [*FLOW_PACKET_COLUMNS, *FLOW_TABLE_COLUMNS]
    assert dict(PACKET_COLUMNS) == dtypes("RECORD_PACKET_COLUMNS")
    assert dict(FLOW_COLUMNS) == dtypes("RECORD_FLOW_COLUMNS")


def test_docs_tables_match_the_exported_columns() -> None:
    packet_table = doc_table("1. PacketTable")
    assert packet_table.pop("data") == (np.dtype(np.uint8), 1)
    assert packet_table == exported("PACKET_COLUMNS")
    assert doc_table("2. FlowTable") == {**exported("FLOW_PACKET_COLUMNS"), **exported("FLOW_COLUMNS")}
    records = doc_table("3. FieldRecords")
    # a name both tables share (proto, client_port, …) must have one dtype in both
    assert records == {**exported("RECORD_PACKET_COLUMNS"), **exported("RECORD_FLOW_COLUMNS")}


def test_stubs_declare_every_export() -> None:
    tree = ast.parse((ROOT / "pytrafgen" / "_core.pyi").read_text())
    declared = {n.target.id: ast.unparse(n.annotation) for n in tree.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    for name in EXPORTS:
        assert declared.get(name) == "tuple[tuple[str, str, int], ...]", name


def _frames() -> list[bytes]:
    eth = bytes(12) + b"\x08\x00"
    ip = bytes.fromhex("45000028000140004006") + bytes(2) + bytes([10, 0, 0, 1, 10, 0, 0, 2])
    tcp = (1234).to_bytes(2, "big") + (80).to_bytes(2, "big") + bytes(8) + b"\x50\x02" + bytes(6)
    return [eth + ip + tcp]


def test_what_the_core_produces_has_the_exported_columns() -> None:
    cols, _ = _core.CaptureFile.from_bytes(pcap_bytes(_frames())).read()
    for name, (dtype, width) in exported("PACKET_COLUMNS").items():
        assert cols[name].dtype == dtype and cols[name].shape == ((1,) if width == 1 else (1, width)), name
    assert set(cols) == {"data", *exported("PACKET_COLUMNS")}
    table = PacketTable.from_frames(_frames())
    flows = _core.assemble_flows(table.status, table.l3, table.proto, table.src, table.dst, table.sport,
                                 table.dport, table.tcp_flags, table.ts_ns, table.wirelen, 0, 0)
    assert set(flows) == {*exported("FLOW_PACKET_COLUMNS"), *exported("FLOW_COLUMNS")}
    for name, (dtype, width) in {**exported("FLOW_PACKET_COLUMNS"), **exported("FLOW_COLUMNS")}.items():
        assert flows[name].dtype == dtype and (flows[name].ndim == 1) == (width == 1), name


def test_a_missing_record_column_is_named_by_the_builder() -> None:
    table = PacketTable.from_frames(_frames())
    records = records_from_packets(table, assemble_flows(table), np.zeros(1, np.int32), ["c"])
    assert isinstance(records, FieldRecords)
    packets = dict(records.packets)
    del packets["icmp_rest"]
    blank = np.zeros((1, 16), np.uint8)
    with pytest.raises(KeyError, match="icmp_rest"):
        _core.build_frames(packets, records.flows, blank, blank, np.zeros((1, 6), np.uint8),
                           np.zeros((1, 6), np.uint8), np.zeros((1, 2), np.uint32), records.blob, 1, True, {})


def test_read_pcap_gives_every_column(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "one.pcap", _frames())
    table = read_pcap(path)
    assert set(table.columns()) == set(TABLE_COLUMNS)
