"""``pytrafgen demo`` — the README's first command — end to end on the bundled default, and
its generated pcaps open cleanly in the tools people use (tshark, scapy)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pytrafgen

pytestmark = [
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed"),
    pytest.mark.timeout(1500),  # the demo's budget is minutes on an idle 2-core CPU; CI shares nothing
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo as a user runs it, its output (stdout and stderr interleaved, not a terminal)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    proc = subprocess.run([sys.executable, "-m", "pytrafgen", "demo", "--out", str(out)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1400)
    assert proc.returncode == 0, proc.stdout[-5000:]
    assert f"report: {out / 'report.html'}" in proc.stdout
    return out, proc.stdout


@pytest.fixture(scope="module")
def demo_out(demo_run: tuple[Path, str]) -> Path:
    return demo_run[0]


def test_demo_stage_lines_match_what_runs(demo_run: tuple[Path, str]) -> None:
    lines = demo_run[1].splitlines()

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    # each stage line appears as that stage starts: sampling follows "generating", the
    # validators follow "evaluating", and nothing of a later stage comes before its line
    tokenizing, gen_ar, gen_markov = first("1/3 tokenizing"), first("2/3 generating every class with ar"), \
        first("2/3 generating every class with markov")
    evaluating = first("3/3 evaluating")
    assert tokenizing < gen_ar < first("ar: sampling") < gen_markov < first("markov: sampling") < evaluating
    assert evaluating < first("evaluating 1/")
    # without a terminal, progress comes as plain lines that end in a final count
    sampled = [line for line in lines if line.startswith("ar: sampling: ")]
    assert sampled[-1].endswith("— done") and "(100 %)" in sampled[-1]


def test_demo_writes_generated_pcaps_and_a_report(demo_out: Path) -> None:
    report = json.loads((demo_out / "report.json").read_text())
    assert set(report["generated"]) >= {"ar", "markov"}
    classes = {row["class"] for row in map(dict, _flow_labels(demo_out / "ar.pcap"))}
    assert len(classes) == 13  # every class of the bundled corpus was generated
    assert (demo_out / "report.md").read_text().count("|") > 50
    assert list(demo_out.glob("**/*.png"))
    html = (demo_out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "Generated set: ar" in html
    assert (demo_out / ".pytrafgen-output").is_file()


def _flow_labels(pcap: Path) -> list[dict[str, str]]:
    import csv

    with Path(f"{pcap}.flows.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("name", ["ar", "markov"])
def test_generated_pcaps_open_cleanly_in_tshark_and_scapy(demo_out: Path, name: str) -> None:
    from scapy.utils import rdpcap

    pcap = demo_out / f"{name}.pcap"
    ours = pytrafgen.read_pcap(pcap)
    assert len(ours) > 100 and not ours.skipped
    # tshark reads the whole file without an error (per-packet protocol complaints about the
    # generated content are what the evaluation's tshark oracle measures, not a read failure)
    proc = subprocess.run(["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.number"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "appears to have been cut short" not in proc.stderr
    assert len(proc.stdout.split()) == len(ours)
    assert len(rdpcap(str(pcap))) == len(ours)
