"""Loaded by the training subprocesses of tests/test_crash_safety.py (on their PYTHONPATH).

With PYTRAFGEN_TEST_STALL_AT_STEP=N the process stops after its N-th optimizer step: it writes
the step to PYTRAFGEN_TEST_STALL_FILE and sleeps, so the test can SIGKILL it at a known point
between two checkpoints. Without the variable it does nothing.
"""

from __future__ import annotations

import os

_STALL_AT = int(os.environ.get("PYTRAFGEN_TEST_STALL_AT_STEP", "0"))

if _STALL_AT > 0:
    import time
    from pathlib import Path

    import torch

    _original_step = torch.optim.AdamW.step
    _done = [0]

    def _step_then_maybe_stall(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        out = _original_step(self, *args, **kwargs)
        _done[0] += 1
        if _done[0] == _STALL_AT:
            Path(os.environ["PYTRAFGEN_TEST_STALL_FILE"]).write_text(str(_done[0]))
            time.sleep(600)  # the test kills the process here
        return out

    torch.optim.AdamW.step = _step_then_maybe_stall
