#!/usr/bin/env bash
# Builds the libFuzzer harnesses under AddressSanitizer + UBSan (docs/hardening.md).
#   csrc/fuzz/build.sh [target ...]      (default: every fuzz_*.cpp here)
# Binaries go to build/fuzz/<target>; the headers are included straight from csrc/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${FUZZ_OUT:-$root/build/fuzz}"
cxx="${CXX_FUZZ:-clang++}"
mkdir -p "$out"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for src in "$here"/fuzz_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
fi
for t in "${targets[@]}"; do
  # -fno-sanitize-recover: a UBSan report stops the run and is saved as a crash input.
  "$cxx" -std=c++17 -g -O1 -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -I"$root/csrc" "$here/$t.cpp" -o "$out/$t"
  echo "built $out/$t"
done
