"""Everyday use of the CLI: ``--out`` never deletes what pytrafgen did not write (every command
that writes), user mistakes end in one ``error:`` line with exit code 2 that says what to do,
and progress shows up without a terminal."""

from __future__ import annotations

import csv
import io
import shutil
import sys
from pathlib import Path

import pytest
from conftest import BUNDLED_CORPUS

from pytrafgen.atomic import OUTPUT_MARKER
from pytrafgen.cli import main

SMALL = ("syn_flood.pcap", "udp_flood.pcap")  # the corpus's two smallest classes


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """Run ``pytrafgen ARGS`` in this process as the console script does: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["pytrafgen", *args])
    capsys.readouterr()
    try:
        main.run()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    return path


def assert_untouched(path: Path) -> None:
    assert sorted(p.name for p in path.iterdir()) == ["thesis.tex"]
    assert (path / "thesis.tex").read_text() == "years of work"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]  # no temporaries left


@pytest.fixture(scope="module")
def manifest() -> Path:
    return BUNDLED_CORPUS / "manifest.csv"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, manifest: Path) -> Path:
    from pytrafgen.tokenizer.pipeline import tokenize_captures

    out = tmp_path_factory.mktemp("safety") / "ds"
    tokenize_captures([BUNDLED_CORPUS / f for f in SMALL], manifest, out, payload_cap=16, max_flow_packets=8)
    return out


@pytest.fixture(scope="module")
def markov_ckpt(dataset: Path) -> Path:
    from pytrafgen.dataset import TrafficDataset
    from pytrafgen.generators.markov import MarkovGenerator

    gen = MarkovGenerator()
    gen.fit(TrafficDataset(dataset), {"seed": 0})
    out = dataset.parent / "markov"
    gen.save(out)
    return out


# -- every command that writes refuses a folder it did not write ------------------------------

def writing_commands(d: Path, out: Path, dataset: Path, ckpt: Path, manifest: Path) -> dict[str, list[str]]:
    pcap = str(BUNDLED_CORPUS / "syn_flood.pcap")
    return {
        "tokenize": ["tokenize", pcap, "--labels", str(manifest), "--out", str(out)],
        "train": ["train", str(dataset), "-g", "markov", "--out", str(out)],
        "pretrain": ["pretrain", str(dataset), "--size", "tiny", "--steps", "1", "--out", str(out)],
        "finetune": ["finetune", str(ckpt), str(dataset), "--steps", "1", "--out", str(out)],
        "evaluate": ["evaluate", "--real", pcap, "--generated", pcap, "--labels", str(manifest), "--out", str(out)],
        "compare": ["compare", str(dataset), "-g", "markov", "--out", str(out)],
        "demo": ["demo", "--out", str(out)],
        "demo build-corpus": ["demo", "build-corpus", str(manifest), "--out", str(out)],
        "demo train-default": ["demo", "train-default", "--out", str(out), "--work", str(d / "work")],
        "replay": ["replay", pcap, "--scenario", "syn_flood", "--out", str(out)],
    }


COMMANDS = ["tokenize", "train", "pretrain", "finetune", "evaluate", "compare", "demo", "demo build-corpus",
            "demo train-default", "replay"]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_pytrafgen_did_not_write_is_refused(command: str, tmp_path: Path, dataset: Path, markov_ckpt: Path,
                                                     manifest: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = user_folder(tmp_path / "mine")
    args = writing_commands(tmp_path, out, dataset, markov_ckpt, manifest)[command]
    code, _, err = cli(capsys, monkeypatch, *args)
    assert code == 2
    line = one_error_line(err)
    assert str(out) in line and "--force" in line and "not write" in line
    assert_untouched(out)


def test_own_output_is_replaced_and_force_replaces_a_users_folder(tmp_path: Path, dataset: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ckpt"
    for _ in range(2):  # the second run replaces the first run's output without --force
        code, _, err = cli(capsys, monkeypatch, "train", str(dataset), "-g", "markov", "--out", str(out), "-q")
        assert code == 0, err
    assert (out / OUTPUT_MARKER).is_file() and (out / "config.json").is_file()
    theirs = user_folder(tmp_path / "theirs")
    code, _, err = cli(capsys, monkeypatch, "train", str(dataset), "-g", "markov", "--out", str(theirs), "--force",
                       "-q")
    assert code == 0, err
    assert not (theirs / "thesis.tex").exists() and (theirs / "config.json").is_file()


def test_report_folder_is_added_to_not_wiped(tmp_path: Path, markov_ckpt: Path, manifest: Path,
                                             capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    gen = tmp_path / "gen.pcap"
    assert cli(capsys, monkeypatch, "generate", str(markov_ckpt), "-c", "syn_flood:5", "-c", "udp_flood:5",
               "--out", str(gen), "-q")[0] == 0
    out = tmp_path / "report"
    args = ["evaluate", "--real", str(BUNDLED_CORPUS / "syn_flood.pcap"), "--real",
            str(BUNDLED_CORPUS / "udp_flood.pcap"), "--labels", str(manifest), "--generated", str(gen),
            "--out", str(out), "--no-tshark", "--no-plots", "-V", "compliance", "-q"]
    code, _, err = cli(capsys, monkeypatch, *args)
    assert code == 0, err
    (out / "replay_syn_flood.json").write_text("{}")  # what `replay --out report` adds to the same folder
    code, _, err = cli(capsys, monkeypatch, *args)
    assert code == 0, err
    assert {"report.json", "report.md", "report.html", OUTPUT_MARKER, "replay_syn_flood.json"} <= {
        p.name for p in out.iterdir()}


def test_generate_refuses_a_directory_or_a_users_file_before_sampling(tmp_path: Path, markov_ckpt: Path,
                                                                     capsys: pytest.CaptureFixture[str],
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sampled = []
    from pytrafgen.generators.markov import MarkovGenerator

    real_sample = MarkovGenerator.sample
    monkeypatch.setattr(MarkovGenerator, "sample", lambda self, *a, **k: sampled.append(1) or real_sample(self, *a, **k))
    folder = tmp_path / "somewhere"
    folder.mkdir()
    code, _, err = cli(capsys, monkeypatch, "generate", str(markov_ckpt), "-c", "syn_flood:3", "--out", str(folder))
    assert code == 2 and "is a directory" in one_error_line(err) and not sampled
    theirs = tmp_path / "capture.pcap"
    theirs.write_bytes(b"their capture")
    code, _, err = cli(capsys, monkeypatch, "generate", str(markov_ckpt), "-c", "syn_flood:3", "--out", str(theirs))
    assert code == 2 and "--force" in one_error_line(err) and not sampled
    assert theirs.read_bytes() == b"their capture"
    # our own output is replaced without --force; a user's file with it
    ours = tmp_path / "gen.pcap"
    for _ in range(2):
        assert cli(capsys, monkeypatch, "generate", str(markov_ckpt), "-c", "syn_flood:3", "--out", str(ours),
                   "-q")[0] == 0
    code, _, err = cli(capsys, monkeypatch, "generate", str(markov_ckpt), "-c", "syn_flood:3", "--out", str(theirs),
                       "--force", "-q")
    assert code == 0, err
    import pytrafgen

    assert len(pytrafgen.read_pcap(theirs)) > 0 and len(sampled) == 3


# -- user mistakes: one line, exit 2, what to do ---------------------------------------------

def test_a_manifest_in_another_folder_labels_captures_by_file_name(tmp_path: Path, manifest: Path,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "labels"
    elsewhere.mkdir()
    shutil.copy(manifest, elsewhere / "manifest.csv")  # rows say "syn_flood.pcap", relative to labels/
    pcap = str(BUNDLED_CORPUS / "syn_flood.pcap")
    code, out, err = cli(capsys, monkeypatch, "tokenize", pcap, "--labels", str(elsewhere / "manifest.csv"),
                         "--out", str(tmp_path / "ds"), "-q", "--json")
    assert code == 0, err
    assert '"syn_flood"' in out
    # a capture no row names: the message says how rows are matched and what to add
    stray = tmp_path / "stray.pcap"
    shutil.copy(pcap, stray)
    code, _, err = cli(capsys, monkeypatch, "tokenize", str(stray), "--labels", str(elsewhere / "manifest.csv"),
                       "--out", str(tmp_path / "ds2"))
    line = one_error_line(err)
    assert code == 2 and "relative to the manifest's own folder" in line and "stray.pcap,CLASS" in line


@pytest.mark.parametrize("command", ["tokenize", "evaluate"])
def test_label_values_other_than_benign_or_malicious_are_refused(command: str, tmp_path: Path, manifest: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "manifest.csv"
    with manifest.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    rows[0]["label"] = "evil"
    with bad.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pcap = str(BUNDLED_CORPUS / rows[0]["file"])
    args = {"tokenize": ["tokenize", pcap, "--labels", str(bad), "--out", str(tmp_path / "ds")],
            "evaluate": ["evaluate", "--real", pcap, "--generated", pcap, "--labels", str(bad),
                         "--out", str(tmp_path / "rep")]}[command]
    code, _, err = cli(capsys, monkeypatch, *args)
    line = one_error_line(err)
    assert code == 2 and "'evil'" in line and "benign, malicious" in line and "line 2" in line


def test_unknown_set_keys_are_refused_with_the_accepted_ones(tmp_path: Path, dataset: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = cli(capsys, monkeypatch, "train", str(dataset), "-g", "markov", "--set", "emision_rows=3",
                       "--out", str(tmp_path / "m"))
    line = one_error_line(err)
    assert code == 2 and "emision_rows" in line and "emission_rows" in line and not (tmp_path / "m").exists()
    code, _, err = cli(capsys, monkeypatch, "compare", str(dataset), "-g", "markov", "--set", "markov.nope=1",
                       "--out", str(tmp_path / "c"))
    line = one_error_line(err)
    assert code == 2 and "nope" in line and "max_flows_per_class" in line
    code, _, err = cli(capsys, monkeypatch, "train", str(dataset), "-g", "ar", "--set", "stepz=3",
                       "--out", str(tmp_path / "a"))
    line = one_error_line(err)
    assert code == 2 and "stepz" in line and "steps" in line


def test_evaluate_names_an_empty_generated_pcap(tmp_path: Path, manifest: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import pytrafgen

    empty = pytrafgen.write_pcap(tmp_path / "empty.pcap", [], ts_ns=[])
    code, _, err = cli(capsys, monkeypatch, "evaluate", "--real", str(BUNDLED_CORPUS / "syn_flood.pcap"),
                       "--labels", str(manifest), "--generated", str(empty), "--out", str(tmp_path / "rep"))
    line = one_error_line(err)
    assert code == 2 and "has no packets" in line and "generate" in line


# -- progress ----------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_prints_every_interval_with_an_eta() -> None:
    from pytrafgen.progress import PlainProgress

    clock, stream = FakeClock(), io.StringIO()
    progress = PlainProgress("sampling", "flows", stream, interval_s=5.0, clock=clock)
    for done in range(0, 101, 10):  # one update per simulated second
        progress.update(done, 100)
        clock.now += 1.0
    progress.finish()
    lines = stream.getvalue().splitlines()
    # at 0 s, 5 s, 10 s, then the closing line
    assert lines[0] == "sampling: 0/100 flows (0 %), 0 s elapsed"
    assert lines[1] == "sampling: 50/100 flows (50 %), 5 s elapsed, about 5 s left"
    assert lines[2] == "sampling: 100/100 flows (100 %), 10 s elapsed"
    assert lines[3].endswith("— done") and len(lines) == 4


def test_progress_bar_without_a_terminal_prints_plain_lines() -> None:
    from pytrafgen.progress import progress_bar, progress_steps

    stream = io.StringIO()  # not a TTY
    with progress_bar("sampling", 3, stream=stream) as update:
        for done in range(1, 4):
            update(done)
    text = stream.getvalue()
    assert text.startswith("sampling: 0/3 flows") and "sampling: 3/3 flows (100 %)" in text
    stream = io.StringIO()
    with progress_steps(2, stream=stream) as step:
        step("compliance")
        step("fidelity")
    assert stream.getvalue().splitlines()[:2] == ["evaluating 1/2: compliance (0 s elapsed)",
                                                  "evaluating 2/2: fidelity (0 s elapsed)"]


def test_generators_report_sampling_progress(markov_ckpt: Path) -> None:
    from pytrafgen.demo.default import default_checkpoint
    from pytrafgen.generators import load_generator

    for ckpt, counts in ((markov_ckpt, {"syn_flood": 7, "udp_flood": 5}), (default_checkpoint(), {"syn_flood": 3})):
        gen = load_generator(ckpt)
        calls: list[tuple[int, int]] = []
        gen.on_progress = lambda done, total, calls=calls: calls.append((done, total))
        records = gen.sample(counts, seed=1)
        wanted = sum(counts.values())
        assert records.n_flows == wanted
        assert calls
        assert [d for d, _ in calls] == sorted(d for d, _ in calls)  # never goes back
        assert calls[-1][0] == calls[-1][1] >= wanted  # ends full; redrawn flows may add to the total


def test_activity_without_a_terminal_prints_start_ticks_and_end() -> None:
    import threading

    from pytrafgen.progress import activity

    stream = io.StringIO()
    release = threading.Event()
    with activity("gan: training", stream=stream, interval_s=0.01):
        # the ticker prints while the work runs; wait until it has, instead of sleeping blindly
        for _ in range(500):
            if "elapsed" in stream.getvalue():
                break
            release.wait(0.01)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "gan: training…"
    assert any(line.startswith("gan: training: ") and line.endswith("elapsed") for line in lines[1:-1])
    assert lines[-1].startswith("gan: training: done in ")


def test_plain_progress_keeps_printing_while_a_batch_runs() -> None:
    import threading

    from pytrafgen.progress import progress_bar

    stream = io.StringIO()
    pause = threading.Event()
    with progress_bar("sampling", 40, stream=stream, interval_s=0.02):
        for _ in range(500):  # one long batch: no update until it ends
            if stream.getvalue().count("0/40 flows") >= 3:
                break
            pause.wait(0.01)
    lines = stream.getvalue().splitlines()
    assert sum(line.startswith("sampling: 0/40 flows (0 %), ") for line in lines) >= 3
    assert lines[-1].endswith("— done")
