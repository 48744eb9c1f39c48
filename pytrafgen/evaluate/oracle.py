"""tshark as an independent compliance oracle.

The packets of an EvalSet are written to a temporary pcap (so a split of a capture is judged
on its own packets only) and dissected by tshark with IPv4/TCP/UDP checksum validation on.
Per packet we read whether it was marked malformed and the highest expert-info severity;
the figures are the shares of packets that are malformed, carry an expert *error* (which
includes bad checksums with validation on) or an expert warning (reported, not counted as a
failure: tshark warns on legitimate RSTs and zero windows).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pytrafgen.evaluate.evalset import EvalSet

SEVERITY_WARN = 0x00600000
SEVERITY_ERROR = 0x00800000
TSHARK_PREFS = ("ip.check_checksum:TRUE", "tcp.check_checksum:TRUE", "udp.check_checksum:TRUE")


def write_frames(path: Path, es: EvalSet) -> None:
    """A classic pcap of the set's frames (nanosecond timestamps, the first packet's link type)."""
    p = es.packets
    linktype = int(p.linktype[0]) if len(p.linktype) else 1
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 262144, linktype))
        for i in range(es.n_packets):
            ts = int(p.ts_ns[i])
            frame = p.frame(i)
            fh.write(struct.pack("<IIII", ts // 1_000_000_000, ts % 1_000_000_000, len(frame), int(p.wirelen[i])))
            fh.write(frame)


def tshark_oracle(es: EvalSet, timeout_s: float = 300.0) -> dict[str, Any]:
    """Malformed / expert-error / expert-warning shares by tshark, or why it was skipped."""
    exe = shutil.which("tshark")
    if exe is None:
        return {"skipped": "tshark is not installed"}
    if es.n_packets == 0:
        return {"skipped": "no packets"}
    with tempfile.TemporaryDirectory(prefix="pytrafgen-oracle-") as tmp:
        pcap = Path(tmp) / "set.pcap"
        write_frames(pcap, es)
        cmd = [exe, "-r", str(pcap), "-n"]
        for pref in TSHARK_PREFS:
            cmd += ["-o", pref]
        cmd += ["-T", "fields", "-e", "frame.number", "-e", "_ws.expert.severity", "-e", "_ws.malformed",
                "-E", "occurrence=a", "-E", "separator=\t"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"skipped": f"tshark took longer than {timeout_s:.0f} s"}
    if proc.returncode != 0:
        return {"skipped": f"tshark failed: {proc.stderr.strip()[:200]}"}
    malformed = np.zeros(es.n_packets, bool)
    worst = np.zeros(es.n_packets, np.int64)
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if not parts[0].isdigit():
            continue
        i = int(parts[0]) - 1
        if not 0 <= i < es.n_packets:
            continue
        severities = [int(s) for s in parts[1].split(",") if s.strip().isdigit()] if len(parts) > 1 else []
        worst[i] = max(severities, default=0)
        malformed[i] = len(parts) > 2 and parts[2].strip() != ""
    error = (worst >= SEVERITY_ERROR) | malformed
    return {
        "packets": es.n_packets,
        "malformed_share": float(malformed.mean()),
        "expert_error_share": float((worst >= SEVERITY_ERROR).mean()),
        "expert_warning_share": float(((worst >= SEVERITY_WARN) & (worst < SEVERITY_ERROR)).mean()),
        "pass_rate": float(1.0 - error.mean()),
        "settings": {"tool": "tshark", "prefs": list(TSHARK_PREFS),
                     "pass": "no malformed mark and no expert info of severity error"},
    }
