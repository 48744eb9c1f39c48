"""Random (often invalid) field records: the builder never crashes, skips what it cannot build
with a reason, and every frame it does build carries valid lengths and checksums."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytrafgen import _core
from pytrafgen.build import BUILD_STATUS_NAMES, LINKTYPE_RAW, build_frames
from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords


def random_records(seed: int, n_packets: int, n_flows: int, blob_len: int) -> tuple[FieldRecords, dict]:
    rng = np.random.default_rng(seed)
    rec = FieldRecords.empty(["a", "b"])
    packets = {}
    for name, dtype in PACKET_COLUMNS.items():
        info = np.iinfo(dtype)
        packets[name] = rng.integers(info.min, info.max, size=n_packets, dtype=dtype, endpoint=True)
    # mostly plausible values, with a share of wild ones left in
    plausible = rng.random(n_packets) < 0.8
    packets["flow"] = np.where(plausible, rng.integers(0, n_flows, n_packets), packets["flow"]).astype(np.int32)
    packets["direction"] = np.where(plausible, rng.integers(0, 2, n_packets), packets["direction"]).astype(np.uint8)
    for off, length, cap in (("ip_opt_off", "ip_opt_len", 44), ("l4_opt_off", "l4_opt_len", 44),
                             ("payload_off", "payload_stored", 300)):
        size = rng.integers(0, cap, n_packets)
        start = rng.integers(0, max(1, blob_len - cap), n_packets)
        packets[length] = np.where(plausible, size, packets[length]).astype(np.uint32)
        packets[off] = np.where(plausible, start, packets[off]).astype(np.uint64)
    for length in ("ip_opt_len", "l4_opt_len"):  # options only on some packets, as in real traffic
        packets[length] = np.where(plausible & (rng.random(n_packets) < 0.7), 0, packets[length]).astype(np.uint32)
    packets["payload_len"] = np.where(plausible, packets["payload_stored"] + rng.integers(0, 50, n_packets),
                                      packets["payload_len"]).astype(np.uint32)
    rec.packets = packets
    rec.flows = {
        "label": rng.integers(0, 2, n_flows).astype(np.int16),
        "ip_version": rng.choice(np.array([4, 6, 5], np.uint8), n_flows, p=[0.5, 0.45, 0.05]),
        "proto": rng.choice(np.array([6, 17, 1, 58, 47], np.uint8), n_flows),
        "client_port": rng.integers(0, 65536, n_flows).astype(np.uint16),
        "server_port": rng.integers(0, 65536, n_flows).astype(np.uint16),
    }
    assert set(rec.flows) == set(FLOW_COLUMNS)
    rec.blob = rng.integers(0, 256, blob_len, dtype=np.uint8)
    addresses = {
        "client_addr": rng.integers(0, 256, (n_flows, 16), dtype=np.uint8),
        "server_addr": rng.integers(0, 256, (n_flows, 16), dtype=np.uint8),
    }
    return rec, addresses


def check_frame(frame: bytes) -> None:
    """Lengths and checksums of one built raw-IP frame, checked with the checksum primitives."""
    if frame[0] >> 4 == 4:
        ihl = (frame[0] & 15) * 4
        assert int.from_bytes(frame[2:4], "big") == len(frame)
        assert _core.internet_checksum(frame[:ihl]) == 0
        src, dst, proto, l4 = frame[12:16], frame[16:20], frame[9], frame[ihl:]
    else:
        assert int.from_bytes(frame[4:6], "big") == len(frame) - 40
        src, dst, proto = frame[8:24], frame[24:40], frame[6]
        at = 40
        while proto not in (6, 17, 1, 58):  # walk the re-chained extension headers
            hl = 8 if proto == 44 else (frame[at + 1] + 2) * 4 if proto == 51 else (frame[at + 1] + 1) * 8
            proto, at = frame[at], at + hl
        l4 = frame[at:]
    if proto == 6:
        assert (l4[12] >> 4) * 4 >= 20
    if proto == 17:
        assert int.from_bytes(l4[4:6], "big") == len(l4) and l4[6:8] != b"\0\0"
    assert _core.l4_checksum(src, dst, proto, l4) == 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(0, 60), st.integers(1, 8), st.integers(0, 600))
def test_random_records_never_crash_and_built_frames_validate(seed: int, n_packets: int, n_flows: int,
                                                              blob_len: int) -> None:
    rec, addresses = random_records(seed, n_packets, n_flows, blob_len)
    built = build_frames(rec, linktype=LINKTYPE_RAW, addresses=addresses, seed=seed)
    assert len(built.status) == n_packets and built.status.max(initial=0) < len(BUILD_STATUS_NAMES)
    assert len(built) == int((built.status == 0).sum())
    assert sum(built.skipped.values()) == n_packets - len(built)
    for j in range(len(built)):
        check_frame(built.frame(j))
