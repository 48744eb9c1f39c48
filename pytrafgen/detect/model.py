"""Detector files: a directory with ``detector.json`` (the header) and the model.

The header names the detector kind, the classes (index = model output column) with their
benign/malicious kind, the input it expects (feature names, or the vocabulary hash for the
transformer), the flow settings it was trained with, and what it was trained on. Loading
checks all of it against this pytrafgen and refuses anything else with one clear error.

scikit-learn models (``forest``, ``boosting``, ``logreg``, ``knn``, ``mlp``) are stored with skops
(``model.skops``), which rebuilds objects from a declared schema instead of unpickling; a file
that names any type outside the few types its kind consists of is refused before anything is
built.
The transformer is stored as safetensors (see :mod:`pytrafgen.detect.transformer`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from pytrafgen.detect.data import FlowSettings
from pytrafgen.errors import PytrafgenError

if TYPE_CHECKING:
    from pytrafgen.protocol_spec import ProtocolSpec

FORMAT = 1
HEADER_FILE = "detector.json"
KINDS = ("forest", "boosting", "transformer", "logreg", "knn", "mlp")


class DetectorError(PytrafgenError):
    """A detector file that cannot be used (missing, corrupt, or made for other inputs)."""


@dataclass
class DetectorHeader:
    kind: str
    classes: list[str]
    class_kinds: dict[str, str]  # class -> "benign" | "malicious" (from the labels manifest)
    settings: FlowSettings
    features: list[str] = field(default_factory=list)  # feature-based kinds
    vocab_hash: str = ""  # transformer
    training: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["format"] = FORMAT
        return body

    @classmethod
    def from_json(cls, body: Any, path: Path) -> DetectorHeader:
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise DetectorError(f"{path}: not a pytrafgen detector header (format {FORMAT})")
        try:
            header = cls(kind=str(body["kind"]), classes=[str(c) for c in body["classes"]],
                         class_kinds={str(k): str(v) for k, v in body["class_kinds"].items()},
                         settings=FlowSettings(**body["settings"]), features=list(body.get("features", [])),
                         vocab_hash=str(body.get("vocab_hash", "")), training=dict(body.get("training", {})))
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise DetectorError(f"{path}: incomplete detector header ({type(exc).__name__}: {exc})") from None
        if header.kind not in KINDS:
            raise DetectorError(f"{path}: unknown detector kind {header.kind!r} (known: {', '.join(KINDS)})")
        if not header.classes:
            raise DetectorError(f"{path}: the detector names no classes")
        return header

    def verdict(self, class_name: str) -> str:
        return self.class_kinds.get(class_name, "unknown")


class Detector(ABC):
    """A trained flow classifier: ``encode`` turns flows into input rows, ``predict_proba``
    gives one probability column per header class."""

    kind: ClassVar[str]

    def __init__(self, header: DetectorHeader) -> None:
        self.header = header

    @abstractmethod
    def encode(self, packets: Any, flows: Any) -> np.ndarray:
        """One input row per flow of ``flows`` (a FlowTable over ``packets``)."""

    def encode_selected(self, packets: Any, flows: Any, select: np.ndarray,
                        context: np.ndarray | None = None) -> np.ndarray:
        """The rows of ``encode`` for the flows ``select`` (indices into ``flows``), in that
        order. ``context``: the selected flows' host context when ``flows`` is only part of a
        capture (a streamed batch; see :mod:`.context`); detectors without it ignore it."""
        return self.encode(packets, flows)[select]

    def with_context(self, inputs: np.ndarray, context: np.ndarray) -> np.ndarray:
        """``inputs`` (rows of ``encode_selected``) with their host context replaced by
        ``context`` (a streamed run learns a flow's context after its features); detectors
        without context columns return ``inputs``."""
        return inputs

    @abstractmethod
    def fit(self, inputs: np.ndarray, labels: np.ndarray, seed: int, sample_weight: np.ndarray | None = None) -> None:
        """Train on rows of ``encode`` output with class indices into ``header.classes``;
        ``sample_weight``: a weight per row (None: all 1), relative within a class (the
        detectors balance the classes themselves)."""

    @abstractmethod
    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        """(n, len(header.classes)) probabilities."""

    @abstractmethod
    def _save_model(self, directory: Path) -> None: ...

    def save(self, path: Path) -> None:
        from pytrafgen.atomic import atomic_dir

        path = Path(path)
        if path.exists() and not (path / HEADER_FILE).is_file():
            raise PytrafgenError(f"{path}: exists and is not a detector; refusing to replace it")
        with atomic_dir(path) as tmp:
            self._save_model(tmp)
            (tmp / HEADER_FILE).write_text(json.dumps(self.header.to_json(), indent=2))


# --- scikit-learn detectors -------------------------------------------------------------------

MODEL_FILE = "model.skops"
# The only types a file of each kind may name beyond what skops trusts by default
# (scikit-learn estimators, numpy arrays and builtins); the first is the object it must hold.
TRUSTED_TYPES: dict[str, tuple[str, ...]] = {
    "forest": ("sklearn.ensemble._forest.RandomForestClassifier", "sklearn.tree._tree.Tree"),
    "boosting": ("sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
                 "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"),
    # scaled-feature kinds: a Pipeline (StandardScaler, the classifier); skops trusts those itself,
    # the MLP's fitted optimiser state is the one extra type
    "logreg": ("sklearn.pipeline.Pipeline",),
    "knn": ("sklearn.pipeline.Pipeline",),
    "mlp": ("sklearn.pipeline.Pipeline", "sklearn.neural_network._stochastic_optimizers.AdamOptimizer"),
}


class SklearnDetector(Detector):
    """Flow features (:mod:`pytrafgen.detect.features`) into a scikit-learn tree ensemble."""

    def __init__(self, header: DetectorHeader, model: Any = None) -> None:
        super().__init__(header)
        self.model = model

    def encode(self, packets: Any, flows: Any) -> np.ndarray:
        from pytrafgen.detect.features import detect_features

        return detect_features(packets, flows)

    def encode_selected(self, packets: Any, flows: Any, select: np.ndarray,
                        context: np.ndarray | None = None) -> np.ndarray:
        """Features of the selected flows only (a streamed run leaves out the flows still open,
        about a third of a batch's): the other flows' packets are marked as in no flow. A
        flow's features depend on its own packets alone, so the rows are those of ``encode``."""
        from pytrafgen.detect.context import whole_capture_context
        from pytrafgen.detect.features import detect_features

        select = np.asarray(select, np.int64)
        if context is None:
            context = whole_capture_context(packets, flows)[select]
        renumber = np.full(len(flows) + 1, -1, np.int64)  # flow_id −1 picks the trailing −1
        renumber[select] = np.arange(len(select))
        columns = SimpleNamespace(**{name: np.asarray(getattr(flows, name))[select]
                                     for name in ("proto", "server_port", "client_port", "start_ns", "end_ns")})
        return detect_features(packets, columns, renumber[np.asarray(flows.flow_id)], np.asarray(flows.direction),
                               context)

    def with_context(self, inputs: np.ndarray, context: np.ndarray) -> np.ndarray:
        from pytrafgen.detect.context import CONTEXT_NAMES
        from pytrafgen.detect.features import FEATURE_NAMES

        first = FEATURE_NAMES.index(CONTEXT_NAMES[0])  # the context columns are the last ones, in order
        out = np.array(inputs, copy=True)
        out[:, first:first + len(CONTEXT_NAMES)] = context
        return out

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        out = np.zeros((len(inputs), len(self.header.classes)))
        if len(inputs):
            # floods and scans repeat the same feature row many times (a streamed run's batch
            # of the benchmark capture: 6 flows per distinct row): each distinct row is predicted once
            rows, inverse = distinct_rows(inputs)
            # the model knows only the classes it saw in training: place its columns
            out[:, np.asarray(self.model.classes_, np.int64)] = self._model_proba(inputs[rows])[inverse]
        return out

    def _model_proba(self, inputs: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(inputs))

    def _save_model(self, directory: Path) -> None:
        import skops.io

        skops.io.dump(self.model, directory / MODEL_FILE)

    @classmethod
    def load_model(cls, header: DetectorHeader, directory: Path) -> Detector:
        import skops.io

        from pytrafgen.detect.features import FEATURE_NAMES

        if header.features != list(FEATURE_NAMES):
            missing = sorted(set(header.features) ^ set(FEATURE_NAMES))
            raise DetectorError(f"{directory}: the detector expects other flow features than this pytrafgen "
                                f"computes (differing: {', '.join(missing) or 'their order'})")
        path = directory / MODEL_FILE
        if not path.is_file():
            raise DetectorError(f"{directory}: {MODEL_FILE} is missing")
        try:
            untrusted = skops.io.get_untrusted_types(file=path)
        except Exception as exc:  # skops raises zipfile/json/key errors on damaged files
            raise DetectorError(f"{path}: not a readable skops file ({type(exc).__name__}: {exc})") from None
        allowed = TRUSTED_TYPES[header.kind]
        unknown = sorted(set(untrusted) - set(allowed))
        if unknown:
            raise DetectorError(f"{path}: refusing to load types outside a {header.kind} model: {', '.join(unknown)}")
        try:
            model = skops.io.load(path, trusted=list(untrusted))
        except Exception as exc:
            raise DetectorError(f"{path}: cannot load the model ({type(exc).__name__}: {exc})") from None
        expected = allowed[0].rsplit(".", 1)[1]
        if type(model).__name__ != expected:
            raise DetectorError(f"{path}: holds a {type(model).__name__}, not a {expected}")
        if header.kind in SCALED_CLASSIFIERS:
            steps = [type(step).__name__ for _, step in getattr(model, "steps", [])]
            if steps != ["StandardScaler", SCALED_CLASSIFIERS[header.kind]]:
                raise DetectorError(f"{path}: holds the steps {steps}, not StandardScaler → "
                                    f"{SCALED_CLASSIFIERS[header.kind]}")
        n_features = getattr(model, "n_features_in_", None)
        classes = np.asarray(getattr(model, "classes_", []))
        if n_features != len(FEATURE_NAMES) or classes.size == 0 or classes.min() < 0 \
                or classes.max() >= len(header.classes):
            raise DetectorError(f"{path}: the model's inputs or classes disagree with {HEADER_FILE}")
        return cls.from_kind(header, model)

    @classmethod
    def from_kind(cls, header: DetectorHeader, model: Any = None) -> SklearnDetector:
        if header.kind in SCALED_CLASSIFIERS:
            return ScaledDetector(header, model)
        return {"forest": ForestDetector, "boosting": BoostingDetector}[header.kind](header, model)


_ROW_HASH_WEIGHTS = np.random.default_rng(16).integers(1, 2**63, size=512, dtype=np.uint64) | np.uint64(1)


def distinct_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the distinct rows of ``x`` (n, F) and, per row, the position among them
    of the row equal to it: ``x[rows][inverse]`` is ``x`` bit for bit. Rows are grouped by a
    64-bit multiplicative hash of their float32 bits, then compared; a row whose hash
    collides with an unequal row stands for itself."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    if bits.shape[1] > len(_ROW_HASH_WEIGHTS):
        return np.arange(len(x)), np.arange(len(x))
    hashes = bits.astype(np.uint64) @ _ROW_HASH_WEIGHTS[:bits.shape[1]]  # wraps modulo 2**64
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    collided = np.flatnonzero((bits[first[inverse]] != bits).any(axis=1))
    if len(collided) == 0:
        return first, inverse
    inverse = inverse.copy()
    inverse[collided] = len(first) + np.arange(len(collided))
    return np.r_[first, collided], inverse


# Prediction cost grows linearly with the trees and `detect run` must keep up with the reader;
# 50 trees are the compromise measured in benchmarks/results/detect.md.
FOREST_TREES = 50
PREDICT_BLOCK_ROWS = 4096  # rows × classes × 8 bytes stays within a core's L2 cache


class ForestDetector(SklearnDetector):
    kind = "forest"

    def fit(self, inputs: np.ndarray, labels: np.ndarray, seed: int, sample_weight: np.ndarray | None = None) -> None:
        from sklearn.ensemble import RandomForestClassifier

        self.model = RandomForestClassifier(n_estimators=FOREST_TREES, class_weight="balanced_subsample",
                                            n_jobs=1, random_state=seed)
        self.model.fit(inputs, labels, sample_weight=sample_weight)
        self._leaf_tables = None

    _leaf_tables: list[np.ndarray] | None = None

    def _model_proba(self, inputs: np.ndarray) -> np.ndarray:
        """``RandomForestClassifier.predict_proba``, bit for bit, without its per-call and
        per-tree overhead (joblib dispatch, a lock, one normalisation per row and tree, which
        outweigh the tree walks on `detect run`'s batches): each tree's leaf class fractions
        are normalised once per leaf (the same divisions, so the same values) and summed in
        tree order over row blocks that stay in cache. Leaves come from scikit-learn's own
        ``Tree.apply``."""
        x = np.asarray(inputs, dtype=np.float32)
        if not np.isfinite(x).all():  # missing values take scikit-learn's own routing
            return np.asarray(self.model.predict_proba(inputs))
        if self._leaf_tables is None:
            tables = []
            for tree in self.model.estimators_:
                value = tree.tree_.value[:, 0, :len(self.model.classes_)]
                normalizer = value.sum(axis=1)[:, np.newaxis]
                normalizer[normalizer == 0.0] = 1.0
                tables.append(value / normalizer)
            self._leaf_tables = tables
        leaves = [tree.tree_.apply(x) for tree in self.model.estimators_]
        out = np.empty((len(x), len(self.model.classes_)))
        for lo in range(0, len(x), PREDICT_BLOCK_ROWS):
            block = out[lo:lo + PREDICT_BLOCK_ROWS]
            block[:] = 0.0
            for table, leaf in zip(self._leaf_tables, leaves, strict=True):
                block += table[leaf[lo:lo + PREDICT_BLOCK_ROWS]]
        out /= len(self._leaf_tables)
        return out


class BoostingDetector(SklearnDetector):
    kind = "boosting"

    def fit(self, inputs: np.ndarray, labels: np.ndarray, seed: int, sample_weight: np.ndarray | None = None) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.model = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.1, class_weight="balanced",
                                                    early_stopping=False, random_state=seed)
        self.model.fit(inputs, labels, sample_weight=sample_weight)


# The seed paper's other flow classifiers, as scikit-learn ships them: each kind is a Pipeline of
# a StandardScaler (the features span bytes, seconds and ⌊log2⌋ counts) and this classifier.
SCALED_CLASSIFIERS = {"logreg": "LogisticRegression", "knn": "KNeighborsClassifier", "mlp": "MLPClassifier"}


class ScaledDetector(SklearnDetector):
    """``logreg``: multinomial logistic regression, balanced class weights; ``knn``: 5 nearest
    neighbours (Euclidean, brute force: no tree types in the file); ``mlp``: one hidden layer
    of 64 ReLU units, Adam, at most 300 epochs. All on standardised flow features."""

    kind = "scaled"  # the header names which of SCALED_CLASSIFIERS

    def _classifier(self, seed: int) -> Any:
        if self.header.kind == "logreg":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(max_iter=2000, class_weight="balanced")
        if self.header.kind == "knn":
            from sklearn.neighbors import KNeighborsClassifier

            return KNeighborsClassifier(5, algorithm="brute")
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier((64,), max_iter=300, random_state=seed)

    def fit(self, inputs: np.ndarray, labels: np.ndarray, seed: int, sample_weight: np.ndarray | None = None) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        weights: dict[str, Any] = {}
        if sample_weight is not None:
            if self.header.kind == "knn":
                raise PytrafgenError("knn cannot weight training flows: leave --generated-weight at 1")
            weights = {"model__sample_weight": sample_weight}
        self.model = Pipeline([("scale", StandardScaler()), ("model", self._classifier(seed))])
        with warnings.catch_warnings():
            # the MLP may stop at max_iter before its tolerance; the fitted model is what is measured
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(inputs, labels, **weights)


def _transformer_protocols(protocols: Mapping[str, ProtocolSpec] | None) -> Mapping[str, ProtocolSpec]:
    """The protocol specs a transformer detector tokenizes with: ``protocols``, else the loaded
    plugins' (resolved here: ``new_detector``/``load_detector`` are edges, docs/architecture.md)."""
    if protocols is not None:
        return protocols
    from pytrafgen.plugins import get_registry

    return get_registry().protocols


def new_detector(kind: str, header: DetectorHeader, transformer_steps: int | None = None,
                 protocols: Mapping[str, ProtocolSpec] | None = None) -> Detector:
    """An untrained detector of ``kind`` (the header's ``kind`` and inputs are set here);
    ``transformer_steps``: fine-tuning steps of a transformer (default: its own); ``protocols``:
    the app protocol specs a transformer tokenizes with (default: the loaded plugins')."""
    from pytrafgen.detect.features import FEATURE_NAMES

    if kind not in KINDS:
        raise PytrafgenError(f"unknown detector model {kind!r} (choose from {', '.join(KINDS)})")
    header.kind = kind
    if kind == "transformer":
        from pytrafgen.detect.transformer import TransformerDetector

        specs = _transformer_protocols(protocols)
        if transformer_steps is None:
            return TransformerDetector.untrained(header, protocols=specs)
        return TransformerDetector.untrained(header, steps=transformer_steps, protocols=specs)
    header.features = list(FEATURE_NAMES)
    return SklearnDetector.from_kind(header)


def load_detector(path: str | Path, protocols: Mapping[str, ProtocolSpec] | None = None) -> Detector:
    """Load a detector directory written by ``Detector.save`` (see the module docstring);
    ``protocols``: as in ``new_detector``."""
    path = Path(path)
    header_path = path / HEADER_FILE
    if not header_path.is_file():
        raise DetectorError(f"{path}: not a detector (no {HEADER_FILE})")
    try:
        body = json.loads(header_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DetectorError(f"{header_path}: unreadable detector header ({exc})") from None
    header = DetectorHeader.from_json(body, header_path)
    if header.kind == "transformer":
        from pytrafgen.detect.transformer import TransformerDetector

        return TransformerDetector.load_model(header, path, _transformer_protocols(protocols))
    return SklearnDetector.load_model(header, path)


__all__ = ["KINDS", "Detector", "DetectorError", "DetectorHeader", "load_detector", "new_detector"]
