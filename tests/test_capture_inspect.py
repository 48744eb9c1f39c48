"""``pytrafgen inspect``: the summary's figures and the one-line error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from capture_files import pcap_file
from typer.testing import CliRunner

from pytrafgen.cli.main import app, build_app, run

FRAME = bytes.fromhex(
    "000000000002000000000001080045000028000100004006f97c0a0000010a000002"
    "04d20050000000000000000050022000917c0000"
)  # Ether / IPv4 / TCP SYN 10.0.0.1:1234 → 10.0.0.2:80
ARP = bytes.fromhex("ffffffffffff000000000001080600010800060400010000000000010a0000010000000000000a000002")


def test_inspect_json_summary(tmp_path: Path) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_file([FRAME, FRAME, ARP, FRAME[:30], FRAME])[:-4])
    build_app()
    result = CliRunner().invoke(app, ["inspect", "--json", str(path)])
    assert result.exit_code == 0, result.output
    (summary,) = json.loads(result.output)
    assert summary["packets"] == 4
    assert summary["skipped"] == {"truncated_record": 1}
    assert summary["status"] == {"ok": 2, "non_ip": 1, "truncated": 1}
    assert summary["l3"] == {"ipv4": 2, "none": 2}  # the cut frame ends inside its IP header
    assert summary["l4"] == {"tcp": 2}
    assert summary["linktypes"] == {"ethernet (1)": 4}
    assert summary["flows"] == 1 and summary["top_server_ports"] == {"80/tcp": 1}
    text = CliRunner().invoke(app, ["inspect", str(path), str(path)])
    assert text.exit_code == 0 and "truncated_record 1" in text.output and "80/tcp" in text.output


def test_inspect_bad_file_is_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"not a capture at all")
    monkeypatch.setenv("COLUMNS", "1000")
    monkeypatch.setattr(sys, "argv", ["pytrafgen", "inspect", str(bad)])
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: {bad}: at byte 0: bad magic: not a pcap or pcapng file"]
