"""The README cannot rot: its two commands are the ones CI and users run, and every command of
its quickstart runs here on the bundled corpus.

Speed substitutions, so the quickstart fits the test budget on a 2-core CPU: model sizes
become ``tiny`` with a few steps, ``compare`` trains each generator for a few steps and caps
the flows per class. Everything else runs exactly as written.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytrafgen.demo.default import corpus_dir

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

SPEED_SUBSTITUTIONS = (
    ("--size small", "--size tiny --steps 3"),
    (" ckpt-pre ds --out ckpt", " ckpt-pre ds --out ckpt --steps 3"),
    ("pytrafgen compare ds", "pytrafgen compare ds --max-per-class 5 --no-plots --set gan.iterations=3 "
                             "--set diffusion.iterations=2 --set diffusion.max_len=8"),
)


def _block_after(heading: str) -> list[str]:
    """Command lines of the first ```bash block after ``heading`` (continuations joined)."""
    start = README.index(heading)
    block = re.search(r"```bash\n(.*?)```", README[start:], re.S)
    assert block, f"no bash block after {heading!r}"
    text = block.group(1).replace("\\\n", " ")
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _namespaces_work() -> bool:
    probe = f"ptgreadme{os.getpid()}"
    if shutil.which("ip") is None or subprocess.run(["ip", "netns", "add", probe], capture_output=True).returncode:
        return False
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return True


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README[: README.index("```", README.index("```bash") + 7)]
    commands = _block_after("# pytrafgen")
    assert len(commands) == 2, commands
    assert "pytrafgen demo" in commands[0]
    assert commands[1].endswith("&& pytest")
    assert first_block.index("# 1. install") < first_block.index("# 2. install the test dependencies")
    ci = (REPO / ".ci" / "run").read_text()
    assert "# 2. install the test dependencies and run the tests" in ci  # CI evaluates that very line


def test_every_cli_command_in_the_reference_table_exists() -> None:
    from typer.testing import CliRunner

    from pytrafgen.cli.main import build_app

    app = build_app()
    table = README[README.index("## CLI reference"): README.index("## Python API")]
    names = sorted(set(re.findall(r"`pytrafgen ([a-z-]+)", table)))
    assert len(names) >= 10
    runner = CliRunner()
    for name in names:
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)


@pytest.mark.timeout(1500)  # ≈ 90 s on the project's 2-core machine
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed (evaluate's oracle)")
def test_quickstart_runs_on_the_bundled_corpus(tmp_path: Path) -> None:
    shutil.copytree(corpus_dir(), tmp_path / "captures")
    env = {**os.environ, "COLUMNS": "200"}
    bindir = Path(sys.executable).parent
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    for line in _block_after("## Quickstart on your own captures"):
        command = line
        for old, new in SPEED_SUBSTITUTIONS:
            command = command.replace(old, new)
        if command.startswith("sudo "):
            if os.geteuid() != 0:
                continue  # replay needs root; its own tests cover it
            command = command[len("sudo "):]
            if not _namespaces_work():
                continue
        words = shlex.split(command, comments=True)
        expanded = [str(p) for w in words for p in (sorted(tmp_path.glob(w)) if "*" in w else [w])]
        proc = subprocess.run(expanded, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "gen.pcap").stat().st_size > 24
    assert (tmp_path / "report" / "report.md").is_file()
    assert (tmp_path / "cmp" / "report.md").is_file()


def test_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python API block, with its placeholder paths pointing at bundled files."""
    from pytrafgen.demo.default import default_checkpoint

    start = README.index("## Python API")
    code = re.search(r"```python\n(.*?)```", README[start:], re.S)
    assert code
    source = code.group(1).replace("    ...\n", "    assert len(chunk) > 0\n")
    shutil.copy(corpus_dir() / "syn_flood.pcap", tmp_path / "capture.pcapng")
    shutil.copy(corpus_dir() / "udp_flood.pcap", tmp_path / "huge.pcap")
    shutil.copytree(default_checkpoint(), tmp_path / "ckpt")
    monkeypatch.chdir(tmp_path)
    exec(compile(source, "README.md", "exec"), {})
    import pytrafgen

    generated = pytrafgen.read_pcap(tmp_path / "gen.pcap")
    flows = pytrafgen.assemble_flows(generated)
    assert len(flows) >= 10 and set(flows.proto.tolist()) == {6}  # syn_flood flows are TCP
