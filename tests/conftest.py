"""Shared fixtures and the captures the tests read.

``CAPTURES`` is the lab capture folder: ``$PYTRAFGEN_SHARED_DATA/captures`` (default
``../shared/data/captures`` beside the clone) when it is there, else the bundled corpus
``pytrafgen/data/corpus`` — trimmed CC0 copies of the same 13 lab captures, with the same file
and class names — so a fresh clone runs every test that reads lab captures. The third-party
public captures (``$PYTRAFGEN_SHARED_DATA/public``) are not shipped (their licences vary): the
few tests written for them run where they are and skip, saying so, where they are not.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PYTRAFGEN_SHARED_DATA", REPO.parent / "shared" / "data"))
BUNDLED_CORPUS = REPO / "pytrafgen" / "data" / "corpus"
FULL_CAPTURES_PRESENT = (SHARED_DATA / "captures" / "manifest.csv").is_file()
CAPTURES = SHARED_DATA / "captures" if FULL_CAPTURES_PRESENT else BUNDLED_CORPUS
PUBLIC = SHARED_DATA / "public"

# What each lab capture holds (tshark's frame.protocols, from the full captures' manifest);
# the bundled corpus's manifest has no such column.
LAB_PROTOCOLS = {
    "benign_coap.pcap": "udp coap", "benign_http.pcap": "tcp http", "benign_mqtt.pcap": "tcp mqtt",
    "http_bruteforce.pcap": "tcp http", "http_flood.pcap": "tcp http", "mqtt_bruteforce.pcap": "tcp mqtt",
    "mqtt_connect_flood.pcap": "tcp mqtt", "mqtt_publish_flood.pcap": "tcp mqtt", "nmap_syn_scan.pcap": "tcp",
    "nmap_version_scan.pcap": "tcp http mqtt", "slowloris.pcap": "tcp", "syn_flood.pcap": "tcp",
    "udp_flood.pcap": "udp",
}


def _manifest_rows(folder: Path) -> list[dict[str, str]]:
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        return []
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


SHARED_CAPTURES = [CAPTURES / row["file"] for row in _manifest_rows(CAPTURES)]
PUBLIC_CAPTURES = [PUBLIC / row["file"] for row in _manifest_rows(PUBLIC)]
ALL_SHARED = SHARED_CAPTURES + PUBLIC_CAPTURES

needs_public = pytest.mark.skipif(
    not PUBLIC_CAPTURES,
    reason=f"the third-party public captures are not shipped and not found at {PUBLIC} "
           f"(set PYTRAFGEN_SHARED_DATA to the folder holding public/manifest.csv)")
needs_full_captures = pytest.mark.skipif(
    not FULL_CAPTURES_PRESENT,
    reason=f"needs the full lab captures, not the trimmed bundled corpus: not found at {SHARED_DATA / 'captures'} "
           f"(set PYTRAFGEN_SHARED_DATA)")


def manifest_row(capture: Path) -> dict[str, str]:
    """The manifest row of a lab or public capture (packets, class, …)."""
    return next(row for row in _manifest_rows(capture.parent) if Path(row["file"]).name == capture.name)


def captures_with(protocol: str) -> list[Path]:
    """Lab and public captures holding ``protocol`` (by their manifests' protocols column)."""
    out = []
    for folder in (CAPTURES, PUBLIC):
        for row in _manifest_rows(folder):
            protocols = row.get("protocols") or LAB_PROTOCOLS.get(Path(row["file"]).name, "")
            if protocol in protocols.split():
                out.append(folder / row["file"])
    return out


def shared_ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.name}" for p in paths]


@pytest.fixture(scope="session")
def captures_dir() -> Path:
    return CAPTURES
