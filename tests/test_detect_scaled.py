"""`pytrafgen detect` with the scaled-feature kinds (logreg, knn, mlp) and the generated flows'
training weight (`--generated-weight`): round trips through the CLI, the same predictions as
the scikit-learn pipeline they wrap, refusal of a file that holds another classifier, and
the weights reaching the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_detect import CORPUS, MANIFEST, _cli, fails  # noqa: F401  (fails: a fixture)

import pytrafgen
from pytrafgen.detect.model import DetectorError, load_detector
from pytrafgen.detect.run import run_detector

FILES = [CORPUS / "udp_flood.pcap", CORPUS / "benign_coap.pcap", CORPUS / "syn_flood.pcap",
         CORPUS / "http_bruteforce.pcap"]
STEPS = {"logreg": "LogisticRegression", "knn": "KNeighborsClassifier", "mlp": "MLPClassifier"}


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for kind in STEPS:
        out[kind] = tmp_path_factory.mktemp("det") / kind
        result = _cli("detect", "train", *FILES, "--labels", MANIFEST, "--model", kind, "--out", out[kind], "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["validation"]["macro_f1"] > 0.9, (kind, result.output)
    return out


@pytest.mark.parametrize("kind", list(STEPS))
def test_scaled_kind_round_trip_equals_scikit_learn(scaled: dict[str, Path], kind: str) -> None:
    from sklearn.preprocessing import StandardScaler

    det = load_detector(scaled[kind])
    assert det.header.kind == kind
    steps = [type(step).__name__ for _, step in det.model.steps]  # type: ignore[attr-defined]
    assert steps == ["StandardScaler", STEPS[kind]]
    table = pytrafgen.read_pcap(FILES[0])
    flows = det.header.settings.assemble(table)
    x = det.encode(table, flows)
    # the stored scaler and classifier, applied by hand, give the detector's probabilities
    scaler, classifier = det.model.steps[0][1], det.model.steps[1][1]  # type: ignore[attr-defined]
    assert isinstance(scaler, StandardScaler)
    by_hand = classifier.predict_proba((x.astype(np.float64) - scaler.mean_) / scaler.scale_)
    proba = det.predict_proba(x)
    # the pipeline scales the float32 features in float32: equal to float32 rounding
    np.testing.assert_allclose(proba[:, classifier.classes_], by_hand, rtol=1e-5, atol=1e-6)
    # a streamed run gives every flow the class of the whole-table prediction
    summary = run_detector(det, [FILES[0]], None)
    assert int(summary.flows.sum()) == len(flows)
    predicted = np.bincount(proba.argmax(axis=1), minlength=len(det.header.classes))
    assert summary.flows.tolist() == predicted.tolist()


def test_loading_refuses_another_classifier_under_a_kind(scaled: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "knn-with-logreg"
    shutil.copytree(scaled["knn"], out)
    shutil.copy(scaled["logreg"] / "model.skops", out / "model.skops")
    with pytest.raises(DetectorError, match="not StandardScaler → KNeighborsClassifier"):
        load_detector(out)
    # the MLP's optimiser type is trusted for an mlp file only
    shutil.copy(scaled["mlp"] / "model.skops", out / "model.skops")
    with pytest.raises(DetectorError, match="refusing to load types"):
        load_detector(out)


def _generated(tmp_path: Path, label: str) -> Path:
    """udp_flood.pcap as a 'generated' capture whose flows all carry ``label``."""
    gen = tmp_path / "gen.pcap"
    shutil.copy(CORPUS / "udp_flood.pcap", gen)
    n = len(pytrafgen.assemble_flows(pytrafgen.read_pcap(gen)))
    Path(str(gen) + ".flows.csv").write_text("flow_index,class\n" + "".join(f"{f},{label}\n" for f in range(n)))
    return gen


def test_generated_weight_reaches_the_model(tmp_path: Path) -> None:
    """Generated flows that contradict the real ones (real udp_flood flows, labeled syn_flood):
    at a large weight they pull udp_flood's held-out flows to syn_flood, at a small weight the
    real flows decide. Logistic regression: its loss is a weighted sum of the rows' losses."""
    gen = _generated(tmp_path, "syn_flood")
    recall = {}
    for weight in ("100", "0.001"):
        out = tmp_path / f"det-{weight}"
        result = _cli("detect", "train", *FILES[:3], "--labels", MANIFEST, "--generated", gen, "--model", "logreg",
                      "--generated-weight", weight, "--out", out, "--json")
        assert result.exit_code == 0, result.output
        body = json.loads(result.output)
        assert body["training"]["generated_weight"] == float(weight)
        recall[weight] = body["validation"]["per_class"]["udp_flood"]["recall"]
    assert recall["0.001"] == 1.0 and recall["100"] < 0.5, recall


def test_generated_weight_bad_values(tmp_path: Path, fails: object) -> None:  # noqa: F811
    gen = _generated(tmp_path, "udp_flood")
    base = ["detect", "train", *FILES[:3], "--labels", MANIFEST, "--generated", gen, "--out", tmp_path / "d"]
    fails([*base, "--generated-weight", "0"], "weight must be positive")  # type: ignore[operator]
    fails([*base, "--generated-weight", "0.5", "--model", "knn"], "knn cannot weight")  # type: ignore[operator]
    assert not (tmp_path / "d").exists()


def test_transformer_draws_generated_flows_by_weight() -> None:
    from pytrafgen.detect.transformer import BalancedDraw

    labels = np.array([0, 0, 0, 1, 1, 2])
    weights = np.array([1.0, 1.0, 8.0, 1.0, 1.0, 0.5])
    rows = BalancedDraw(labels, weights, np.random.default_rng(0))(30_000)
    share = np.bincount(rows, minlength=6) / len(rows)
    # a class a third of the time whatever its size and weights; within class 0, row 2 8 of 10
    np.testing.assert_allclose(share, [1 / 30, 1 / 30, 8 / 30, 1 / 6, 1 / 6, 1 / 3], atol=0.012)
    # without weights: a class, then a flow of it uniformly, as numpy draws them
    rng = np.random.default_rng(5)
    expected = [rng.choice(np.flatnonzero(labels == c)) for c in rng.integers(0, 3, 50)]
    assert BalancedDraw(labels, None, np.random.default_rng(5))(50).tolist() == expected
