"""One run of ``bench_ar.py --pipeline``, in a fresh process: ``pytrafgen generate ARGS`` as the
command runs it, with this tree's package or the one extracted at CODE (a previous revision's
``pytrafgen`` folder, run on this build's C++ core); writes the number of sampled tokens of the
flows kept to TOKENS_JSON. Imports nothing of pytrafgen before choosing which one to load.
``PYTRAFGEN_BENCH_SAMPLING`` (a JSON object, e.g. ``{"bf16_linears": false}``) overrides
sampling settings the command has no option for.

    python benchmarks/ar_generate_child.py {current|CODE} TOKENS_JSON generate ...
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any


def main() -> None:
    code, tokens_out, argv = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    if code != "current":
        # the previous Python code on the previous revision's C++ core where bench_ar.py put one
        # there (--previous-core), else on this build's; the editable install's import hook
        # (which maps pytrafgen to this tree) is bypassed
        if not any((Path(code) / "pytrafgen").glob("_core*.so")):
            for core in Path(sysconfig.get_paths()["platlib"]).glob("pytrafgen/_core*.so"):
                shutil.copy(core, Path(code) / "pytrafgen" / core.name)
        sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__ != "_editable_skbc_pytrafgen"]
        sys.path.insert(0, code)
    import pytrafgen.generators.ar.sample as sample_module

    original = sample_module.sample_classes
    tokens = [0]

    overrides = json.loads(os.environ.get("PYTRAFGEN_BENCH_SAMPLING") or "{}")

    def counting(*args: Any, **kwargs: Any) -> Any:
        if overrides:  # settings: sample_classes' 7th argument
            args = (*args[:6], dataclasses.replace(args[6], **overrides), *args[7:])
        sequences, names = original(*args, **kwargs)
        tokens[0] += sum(len(seq) for seq in sequences)
        return sequences, names

    sample_module.sample_classes = counting  # the generator imports it at call time
    from pytrafgen.cli.main import run

    sys.argv = ["pytrafgen", *argv]
    try:
        run()  # as the `pytrafgen` command does (exits through SystemExit)
    finally:
        tokens_out.write_text(json.dumps({"tokens": tokens[0], "package": sample_module.__file__}))


if __name__ == "__main__":
    main()
