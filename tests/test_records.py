from __future__ import annotations

import numpy as np
import pytest

from pytrafgen.records import FLOW_COLUMNS, PACKET_COLUMNS, FieldRecords


def _records(n_packets: int = 3) -> FieldRecords:
    packets = {n: np.zeros(n_packets, d) for n, d in PACKET_COLUMNS.items()}
    packets["payload_len"][:] = 4
    packets["payload_stored"][:] = 4
    packets["payload_off"][:] = np.arange(n_packets) * 4
    flows = {n: np.zeros(1, d) for n, d in FLOW_COLUMNS.items()}
    flows["ip_version"][:] = 4
    flows["proto"][:] = 6
    return FieldRecords(packets, flows, np.zeros(4 * n_packets, np.uint8), ["benign"])


def test_valid_records() -> None:
    rec = _records()
    assert (rec.n_flows, rec.n_packets) == (1, 3)
    assert FieldRecords.empty(["a"]).n_packets == 0


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r.packets.pop("seq"), "missing packet column 'seq'"),
        (lambda r: r.packets.__setitem__("seq", np.zeros(3, np.int64)), "'seq' must be 1-D uint32"),
        (lambda r: r.packets.__setitem__("flow", np.array([0, 1, 0], np.int32)), "'flow' index out of range"),
        (lambda r: r.flows.__setitem__("label", np.array([1], np.int16)), "'label' out of range"),
        (lambda r: r.packets.__setitem__("payload_off", np.array([0, 4, 9], np.uint64)), "reach past the blob"),
        (lambda r: r.packets.__setitem__("payload_stored", np.array([5, 4, 4], np.uint32)), "exceeds payload_len"),
    ],
)
def test_invalid_records_are_refused(mutate, message: str) -> None:
    rec = _records()
    mutate(rec)
    with pytest.raises(ValueError, match=message):
        rec.validate()
