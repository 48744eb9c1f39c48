#!/usr/bin/env bash
# Builds _core with AddressSanitizer + UBSan into build/asan (PYTRAFGEN_SANITIZE=ON, apart from
# the editable install's build) and runs the C++-facing tests against it (docs/hardening.md).
#   csrc/fuzz/sanitize_tests.sh [pytest args...]    (default: the C++-facing test files)
# Any ASan or UBSan report fails the run; reports are kept in build/asan/reports/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
py="${PYTHON:-python}"
cxx="${CXX:-c++}"
build="$root/build/asan"
if [ ! -f "$build/CMakeCache.txt" ]; then
  cmake -S . -B "$build" -DPYTRAFGEN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug \
    -DPython_EXECUTABLE="$(command -v "$py")" \
    -Dpybind11_DIR="$("$py" -c 'import pybind11; print(pybind11.get_cmake_dir())')" >/dev/null
fi
cmake --build "$build" -j "${JOBS:-2}" >/dev/null
core="$(ls "$build"/_core*.so)"
reports="$build/reports"
rm -rf "$reports"; mkdir -p "$reports"
tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
  tests=(tests/test_capture_errors.py tests/test_capture_formats.py tests/test_capture_io.py
         tests/test_capture_reference.py tests/test_malformed.py tests/test_fuzz_regressions.py
         tests/test_flows.py tests/test_tokenize.py tests/test_build.py tests/test_build_fuzz.py
         tests/test_checksum.py tests/test_fused_step.py -q -p no:cacheprovider)
fi
# The interpreter is not instrumented: libasan must be loaded first, and libstdc++ with it so
# that ASan's __cxa_throw interceptor finds the real one (C++ exceptions carry CaptureError).
export LD_PRELOAD="$("$cxx" -print-file-name=libasan.so) $("$cxx" -print-file-name=libstdc++.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
status=0
"$py" csrc/fuzz/sanitized_pytest.py "$core" "${tests[@]}" || status=$?
unset LD_PRELOAD
if compgen -G "$reports/*" >/dev/null; then
  echo "sanitizer reports:" >&2
  cat "$reports"/* >&2
  status=1
fi
exit $status
