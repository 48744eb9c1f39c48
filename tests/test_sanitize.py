"""The C++-facing tests against a _core built with PYTRAFGEN_SANITIZE=ON (ASan + UBSan).

Deselected by default (marker ``sanitize``); run with ``pytest -m sanitize tests/test_sanitize.py``
or straight through ``csrc/fuzz/sanitize_tests.sh``. It builds build/asan (once; later runs
rebuild what changed) and runs the test files below in a subprocess with libasan preloaded;
any ASan or UBSan report fails it. See docs/hardening.md for the time it takes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SANITIZED_TESTS = (
    "tests/test_malformed.py", "tests/test_fuzz_regressions.py", "tests/test_capture_errors.py",
    "tests/test_capture_formats.py", "tests/test_capture_io.py", "tests/test_flows.py", "tests/test_tokenize.py",
    "tests/test_build.py", "tests/test_checksum.py",
)


@pytest.mark.sanitize
@pytest.mark.timeout(3600)
def test_cpp_facing_tests_pass_under_asan_and_ubsan() -> None:
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("cmake and a C++ compiler are needed for the sanitizer build")
    cmd = ["bash", str(REPO / "csrc" / "fuzz" / "sanitize_tests.sh"), *SANITIZED_TESTS, "-q", "-p", "no:cacheprovider",
           "-m", "not slow and not gpu and not sanitize"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable})
    out = done.stdout + done.stderr
    assert "pytrafgen._core: " + str(REPO / "build" / "asan") in out, out[-3000:]
    assert done.returncode == 0, out[-6000:]
    assert "AddressSanitizer" not in out and "runtime error:" not in out, out[-6000:]
