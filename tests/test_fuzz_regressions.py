"""Replays every input that ever crashed a fuzz harness (csrc/fuzz/regressions/<target>/)
through the Python API: each must end in a result or a typed error, never a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fuzz_inputs import build_args, decode_args, flows_args, fuzz_vocabulary

import pytrafgen
from pytrafgen import _core
from pytrafgen.errors import CaptureError, TokenError
from pytrafgen.tokenizer.decode import decode
from pytrafgen.tokenizer.encode import encode_flows

REGRESSIONS = Path(__file__).resolve().parents[1] / "csrc" / "fuzz" / "regressions"
TARGETS = ("fuzz_reader", "fuzz_flows", "fuzz_decode", "fuzz_build", "fuzz_encode")


def _inputs(target: str) -> list[Path]:
    folder = REGRESSIONS / target
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


ALL = [(t, p) for t in TARGETS for p in _inputs(t)]


def test_every_regression_folder_is_a_known_target() -> None:
    assert {p.name for p in REGRESSIONS.iterdir()} <= set(TARGETS)
    assert ALL, "the regression corpus is empty"


def _replay_reader(data: bytes) -> None:
    try:
        table = pytrafgen.PacketTable.concat(_core_chunks(data))
    except CaptureError as err:
        assert 0 <= err.offset <= len(data)
        return
    assert (table.frame_off.astype(np.int64) + table.caplen <= len(table.data)).all()
    # the 16-bit header offsets never wrap (the tokenizer reads headers through them)
    ok = table.status == 0
    assert (table.l4_off[ok].astype(np.int64) + table.l4_hdr_len[ok] == table.payload_off[ok]).all()
    assert sum(table.skipped.values()) <= len(data)


def _core_chunks(data: bytes) -> list[pytrafgen.PacketTable]:
    from pytrafgen.capture import _table_from_reader  # the path read_pcap/iter_pcap take

    reader = _core.CaptureFile.from_bytes(data, "<regression>")
    chunks = []
    while not reader.done:
        chunks.append(_table_from_reader(reader, 1 + data[0] % 8 if data else 1))
    return chunks


def _replay_flows(data: bytes) -> None:
    args = flows_args(data)
    out = _core.assemble_flows(**args)
    n_flows = len(out["proto"])
    assert len(out["flow_id"]) == len(args["status"])
    assert ((out["flow_id"] >= -1) & (out["flow_id"] < n_flows)).all()
    assert (out["end_ns"] >= out["start_ns"]).all()


def _replay_decode(data: bytes) -> None:
    tokens, offsets, strict = decode_args(data)
    skipped: dict[str, int] = {}
    try:
        records = decode(tokens, offsets, fuzz_vocabulary(), strict=strict, skipped=skipped, protocols={})
    except TokenError:
        assert strict
        return
    non_empty = int((np.diff(offsets) > 0).sum())
    assert records.n_flows + sum(skipped.values()) == non_empty


def _replay_build(data: bytes) -> None:
    args = build_args(data)
    n = len(args["packets"]["flow"])
    try:
        out = _core.build_frames(**args)
    except (ValueError, IndexError) as err:  # the binding's typed refusals of bad columns
        pytest.fail(f"the harness only makes inputs the binding accepts: {err}")
    assert len(out["status"]) == n
    assert int(out["frame_len"].sum()) == len(out["data"])


def _replay_encode(data: bytes) -> None:
    """Capture → flows → tokens → records, as ``pytrafgen tokenize`` and a decode would run."""
    try:
        table = pytrafgen.PacketTable.concat(_core_chunks(data))
    except CaptureError:
        return
    flows = pytrafgen.assemble_flows(table)
    labels = (np.arange(len(flows)) % 4 - 1).astype(np.int32)  # some flows left out, as the harness does
    encoded = encode_flows(table, flows, labels, fuzz_vocabulary(), protocols={})
    assert encoded.tokens.max(initial=0) < fuzz_vocabulary().size
    skipped: dict[str, int] = {}
    records = decode(encoded.tokens, encoded.offsets, fuzz_vocabulary(), skipped=skipped, protocols={})
    assert not skipped, f"encoded flows that do not decode: {skipped}"
    assert records.n_flows == int((np.diff(encoded.offsets) > 0).sum())


REPLAY = {"fuzz_reader": _replay_reader, "fuzz_flows": _replay_flows, "fuzz_decode": _replay_decode,
          "fuzz_build": _replay_build, "fuzz_encode": _replay_encode}


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("target", "path"), ALL, ids=[f"{t}/{p.name}" for t, p in ALL])
def test_replay(target: str, path: Path) -> None:
    REPLAY[target](path.read_bytes())
