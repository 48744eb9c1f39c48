"""``report.html``: one self-contained page, checked as written and as a real browser (Debian's
chromium, headless) renders it — titles, figures, rule descriptions, images that decode."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import BUNDLED_CORPUS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
CLASSES = ("syn_flood", "udp_flood", "mqtt_bruteforce")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A markov model's flows evaluated against three real classes (utility, compliance, class
    fidelity and the plots included), through the CLI as a user runs it."""
    work = tmp_path_factory.mktemp("report")
    manifest = BUNDLED_CORPUS / "manifest.csv"
    real = [str(BUNDLED_CORPUS / f"{c}.pcap") for c in CLASSES]

    def run(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "pytrafgen", *args], capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    run("tokenize", *real, "--labels", str(manifest), "--out", str(work / "ds"), "-q", "--payload-cap", "16",
        "--max-flow-packets", "16", "-j", "1")
    run("train", str(work / "ds"), "-g", "markov", "--out", str(work / "markov"), "-q")
    run("generate", str(work / "markov"), *[a for c in CLASSES for a in ("-c", f"{c}:15")], "--out",
        str(work / "gen.pcap"), "-q")
    _break_one_rule(work / "gen.pcap")
    run("evaluate", *[a for r in real for a in ("--real", r)], "--labels", str(manifest), "--generated",
        str(work / "gen.pcap"), "--no-tshark", "--out", str(work / "report"), "-q",
        "-V", "compliance", "-V", "fidelity", "-V", "utility", "-V", "class_fidelity")
    return work / "report"


def _break_one_rule(pcap: Path) -> None:
    """Generated flows are valid by construction, so the failing-rules table would stay empty:
    give one TCP packet SYN and FIN together (checksum recomputed), a combination a rule forbids."""
    from scapy.layers.inet import TCP
    from scapy.utils import rdpcap, wrpcap

    packets = rdpcap(str(pcap))
    victim = next(p for p in packets if TCP in p)
    victim[TCP].flags = "SF"
    del victim[TCP].chksum
    wrpcap(str(pcap), packets)


class _Page(HTMLParser):
    """Visible text, image sources and every URL the page refers to."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("style", "script"):
            self._skip += 1
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)
                if tag == "img":
                    self.images.append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def _parse(html_text: str) -> _Page:
    page = _Page()
    page.feed(html_text)
    return page


def test_report_html_is_self_contained_and_readable(report_dir: Path) -> None:
    from pytrafgen.evaluate.compliance import all_rules
    from pytrafgen.plugins import get_registry

    page = _parse((report_dir / "report.html").read_text())
    text = " ".join(page.text)
    # nothing to fetch: every image inline, links only to anchors on the page
    assert all(u.startswith(("data:image/png;base64,", "#")) for u in page.urls), page.urls
    assert len(page.images) >= 1 + 1 + len(CLASSES) + 1  # summary, confusion, one per class, inter-arrival times
    for src in page.images:
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    # human labels, never the JSON keys; what each figure means beside it
    assert "compliance_packets_final" not in text and "packet compliance (final)" in text
    assert "share of generated packets that break no protocol rule" in text
    # no raw (pre-repair) pcap was given: its row says so instead of a blank
    raw_row = re.search(r"packet compliance \(raw\)\s+(\S+ \S+)", text)
    assert raw_row and raw_row.group(1) == "no data"
    # per class, per detector, and the failing rules with their registry descriptions
    report = json.loads((report_dir / "report.json").read_text())
    metrics = report["generated"]["gen"]["metrics"]
    for cls in CLASSES:
        assert cls in text
    for detector in metrics["utility"]["macro_f1"]:
        assert detector.replace("_", " ") in text
    descriptions = {r.id: r.description for r in all_rules(get_registry().protocols)}
    failing = [rid for rid, v in metrics["compliance"]["final"]["per_rule"].items()
               if v["pass_rate"] is not None and v["pass_rate"] < 1.0]
    assert failing, "one packet was given SYN and FIN together; the table must list the rule it breaks"
    for rid in failing[:5]:
        assert rid in text and descriptions[rid] in text
    assert "pass rate is the share of the packets (or flows) a rule applies to that satisfy it" in text


# the report page itself plus a probe that, once the browser has loaded and decoded everything,
# writes what it saw into the DOM, which --dump-dom then prints
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const decoded = imgs.filter(i => i.complete && i.naturalWidth > 100 && i.naturalHeight > 100).length;
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images: imgs.length, decoded: decoded,
                                    h1: document.querySelector("h1").textContent,
                                    tables: document.querySelectorAll("table").length});
  document.body.appendChild(out);
});
</script>"""


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                               "--no-first-run", "--disable-background-networking", "--disable-component-update",
                               "--disable-sync", f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=120)


@needs_chromium
def test_chromium_renders_the_report_with_every_image_decoded(report_dir: Path, tmp_path: Path) -> None:
    page = tmp_path / "probe.html"
    page.write_text((report_dir / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    proc = _chromium("--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    probe = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert probe, proc.stdout[-2000:]
    seen = json.loads(probe.group(1).replace("&quot;", '"'))
    assert seen["h1"] == "pytrafgen evaluation report"
    assert seen["images"] >= 6 and seen["decoded"] == seen["images"]
    assert seen["tables"] >= 4  # side by side, per class, detectors, rules
    # the figures in the rendered page are report.json's, formatted
    summary = json.loads((report_dir / "report.json").read_text())["summary"]["gen"]
    rendered = re.sub(r"<[^>]+>", " ", proc.stdout)
    for key in ("compliance_packets_final", "utility_tstr", "class_fidelity_f1"):
        assert f"{summary[key]:.4f}" in rendered


@needs_chromium
def test_chromium_screenshot_is_drawn(report_dir: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    proc = _chromium("--window-size=1280,2000", "--hide-scrollbars", f"--screenshot={shot}",
                     (report_dir / "report.html").as_uri())
    assert proc.returncode == 0, proc.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, tables and plots, not a blank page


def test_figures_added_later_show_under_readable_names() -> None:
    """A headline figure another validator adds shows up in every table without code here."""
    from pytrafgen.evaluate.report import metric_label, summary_rows

    summary = {"ar": {"compliance_packets_final": 0.9, "compliance_flows_raw": 0.5, "tstr_gap_random_forest": 0.1}}
    rows = dict(summary_rows(summary))
    assert rows["compliance_packets_final"] == "packet compliance (final)"
    assert rows["compliance_flows_raw"] == "flow compliance (raw)"
    assert rows["tstr_gap_random_forest"] == "tstr gap random forest"
    assert metric_label("class_fidelity_f1") == "class-fidelity macro-F1"
