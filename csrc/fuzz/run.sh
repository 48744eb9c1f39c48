#!/usr/bin/env bash
# Runs one harness under libFuzzer (docs/hardening.md).
#   csrc/fuzz/run.sh <target> [seconds=600] [extra libFuzzer flags...]
# Working corpus: build/fuzz/work/<target> (seeded from csrc/fuzz/corpus/<target>, the
# regressions and, if present, build/fuzz/seeds/<target>). Crashes land in
# build/fuzz/artifacts/<target>/; copy each into csrc/fuzz/regressions/<target>/ once fixed.
# The log (executions/s, coverage) is build/fuzz/logs/<target>.log.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
t="$1"; secs="${2:-600}"; shift $(( $# >= 2 ? 2 : 1 ))
bin="$root/build/fuzz/$t"
[ -x "$bin" ] || "$here/build.sh" "$t"
work="$root/build/fuzz/work/$t"; art="$root/build/fuzz/artifacts/$t"; logs="$root/build/fuzz/logs"
mkdir -p "$work" "$art" "$logs"
seeds=()
# fuzz_encode reads captures too: it starts from the reader's seeds.
extra=(); [ "$t" = fuzz_encode ] && extra=("$here/corpus/fuzz_reader" "$root/build/fuzz/seeds/fuzz_reader")
for d in "$here/corpus/$t" "$here/regressions/$t" "$root/build/fuzz/seeds/$t" "${extra[@]}"; do
  [ -d "$d" ] && seeds+=("$d")
done
# rss_limit: the harnesses never need much; a leak or a runaway allocation shows as a crash.
exec "$bin" "$work" "${seeds[@]}" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 \
  -max_len=65536 -print_final_stats=1 -artifact_prefix="$art/" "$@" >"$logs/$t.log" 2>&1
