"""CodecLayout: the typed token layout the C++ codec reads (one default, clear errors, derived
from vocab.json so saved datasets and checkpoints still load)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pytrafgen.errors import DatasetError
from pytrafgen.tokenizer import DEFAULT_PAYLOAD_CAP, AppProtocol, CodecLayout, Vocabulary
from pytrafgen.tokenizer.vocab import CORE_RANGE_NAMES

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "pytrafgen" / "data" / "default_model"


def _vocab() -> Vocabulary:
    return Vocabulary(["a", "b"], [AppProtocol("x", "tcp", ("GET", "POST"))], payload_cap=20)


def test_layout_follows_the_vocabulary() -> None:
    vocab = _vocab()
    lay = vocab.codec_layout
    assert lay.range_starts == tuple(vocab.ranges[n].start for n in CORE_RANGE_NAMES)
    assert (lay.class_start, lay.n_classes, lay.vocab_size) == (vocab.ranges["class"].start, 2, vocab.size)
    assert lay.payload_cap == vocab.payload_cap == 20
    assert [(a.begin, a.n_local, a.transport) for a in lay.apps] == [(vocab.app_begin("x"), 2, 6)]
    core = lay.to_core()
    assert core["layout"].dtype == np.int32 and core["apps"].shape == (1, 4)
    assert core["iat_edges"].dtype == np.int64 and len(core["iat_values"]) == len(core["iat_edges"]) + 1


def test_one_default_payload_cap() -> None:
    field = {f.name: f for f in dataclasses.fields(CodecLayout)}["payload_cap"]
    assert field.default == DEFAULT_PAYLOAD_CAP == Vocabulary(["a"]).payload_cap


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _vocab().codec_layout.payload_cap = 1  # type: ignore[misc]


@pytest.mark.parametrize(("change", "message"), [
    ({"payload_cap": 5000}, "payload cap must be between 0 and 1024, got 5000"),
    ({"range_starts": (5, 3)}, "core range starts must not decrease"),
    ({"iat_edges_ns": (1, 2)}, "63 inter-arrival edges and 64 values expected, got 2 and 64"),
    ({"n_classes": 1000}, "class range"),
])
def test_bad_layouts_are_refused_with_a_clear_error(change: dict[str, object], message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        dataclasses.replace(_vocab().codec_layout, **change)  # type: ignore[arg-type]


def test_a_bad_payload_cap_is_refused_by_the_vocabulary() -> None:
    with pytest.raises(DatasetError, match="payload cap must be between 0 and 1024, got -1"):
        Vocabulary(["a"], payload_cap=-1)


def test_saved_vocabularies_still_load() -> None:
    """The bundled checkpoint's vocab.json (written before CodecLayout) gives its layout."""
    vocab = Vocabulary.load(DEFAULT_MODEL / "vocab.json")
    assert vocab.codec_layout.payload_cap == vocab.to_json()["payload_cap"]
    assert Vocabulary.from_json(vocab.to_json()).codec_layout == vocab.codec_layout
