"""Per-file equality rate of read -> records_from_packets -> build (original addresses and ISNs
passed back, raw IP) against the captured IP packets, for every shared and public capture.
The same comparison as tests/test_build.py, written out as a table.

    python benchmarks/roundtrip_build.py --out benchmarks/results/build_roundtrip
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import PUBLIC_CAPTURES, SHARED_CAPTURES  # noqa: E402
from test_build import compare_round_trip, load  # noqa: E402

from pytrafgen.atomic import atomic_file  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "build_roundtrip")
    args = ap.parse_args()
    rows = []
    for path in SHARED_CAPTURES + PUBLIC_CAPTURES:
        table, _, records, origin = load(path)
        kinds = compare_round_trip(table, records, origin)
        exact = compare_round_trip(table, records, origin, repair=False)["equal"]
        rows.append({
            "file": f"{path.parent.name}/{path.name}",
            "rows": len(table),
            "record_packets": records.n_packets,
            "not_in_records": origin.skipped,
            "equal": len(kinds["equal"]),
            "checksum_only": len(kinds["checksum_only"]),
            "derived_only": len(kinds["derived_only"]),
            "other": len(kinds["other"]),
            "equal_rate": len(kinds["equal"]) / max(1, records.n_packets),
            "equal_without_repair": len(exact),
        })
    result = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "files": rows}
    with atomic_file(args.out.with_suffix(".json"), "w") as fh:
        json.dump(result, fh, indent=1)
    md = ["# Build round trip: captured IP packets vs rebuilt (original addresses and ISNs)", "",
          f"`{result['command']}` — {result['date']}", "",
          "`equal`: every byte of the captured IP packet matches with repair on; `checksum only`: the "
          "bytes differ only in checksum fields — captured on the sending host with checksum offload "
          "(tshark flags exactly these as bad), or a UDP checksum of 0x0000 (\"none\", RFC 768: "
          "nb6-http's 18 L2TP packets; udp_flood's one packet whose checksum computes to 0, which "
          "RFC 768 sends as 0xffff) where the builder always writes the computed one; "
          "`exact w/o repair`: matches when the captured derived fields are written back "
          "(`repair=False`). No packet differs anywhere else.", "",
          "| file | records | equal | rate | checksum only | other | exact w/o repair | not in records |",
          "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        md.append(f"| {r['file']} | {r['record_packets']} | {r['equal']} | {r['equal_rate']:.3%} | "
                  f"{r['checksum_only']} | {r['other'] + r['derived_only']} | {r['equal_without_repair']} | "
                  f"{', '.join(f'{k} {v}' for k, v in r['not_in_records'].items()) or '—'} |")
    with atomic_file(args.out.with_suffix(".md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
