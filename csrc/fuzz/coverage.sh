#!/usr/bin/env bash
# Line coverage of the csrc headers reached by each harness's working corpus (docs/hardening.md).
#   csrc/fuzz/coverage.sh [target ...]
# Builds an un-sanitized, coverage-instrumented copy of each harness into build/fuzz/cov/,
# replays build/fuzz/work/<target> (plus the committed seeds and regressions) once, and prints
# llvm-cov's per-file summary for the headers under csrc/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$root/build/fuzz/cov"; mkdir -p "$out"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for src in "$here"/fuzz_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
fi
for t in "${targets[@]}"; do
  clang++ -std=c++17 -O1 -g -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping \
    -I"$root/csrc" "$here/$t.cpp" -o "$out/$t"
  dirs=()
  for d in "$root/build/fuzz/work/$t" "$here/corpus/$t" "$here/regressions/$t"; do [ -d "$d" ] && dirs+=("$d"); done
  [ "$t" = fuzz_encode ] && dirs+=("$here/corpus/fuzz_reader")
  files=()
  for d in "${dirs[@]}"; do while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$d" -type f -print0); done
  LLVM_PROFILE_FILE="$out/$t.profraw" "$out/$t" -runs=0 "${files[@]}" >/dev/null 2>&1 || true
  llvm-profdata merge -sparse "$out/$t.profraw" -o "$out/$t.profdata"
  echo "== $t (${#files[@]} inputs)"
  # columns: file, regions…, lines, missed lines, line cover, branches, missed, branch cover
  llvm-cov report "$out/$t" -instr-profile="$out/$t.profdata" "$root"/csrc/*.hpp | grep -E "\.hpp|^TOTAL" \
    | awk '$8 > 0 {printf "%-28s lines %5d  line cover %8s  branch cover %8s\n", $1, $8, $10, $13}' \
    | sed 's#.*/csrc/#csrc/#'
done
