"""The static vocabulary: one contiguous range per field, stable core ids, versioned JSON, hash."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from pytrafgen import _core
from pytrafgen.errors import DatasetError
from pytrafgen.tokenizer.vocab import CORE_RANGE_NAMES, AppProtocol, Vocabulary

APPS = [AppProtocol("zz", "tcp", ("X", "Y")), AppProtocol("aa", "", ("P",))]


def test_ranges_tile_the_vocabulary_without_overlap():
    vocab = Vocabulary(["b", "a"], APPS, 64)
    ranges = sorted(vocab.ranges.values(), key=lambda r: r.start)
    assert ranges[0].start == 0
    for prev, nxt in itertools.pairwise(ranges):
        assert prev.stop == nxt.start
    assert ranges[-1].stop == vocab.size <= 65535
    for token in (0, 100, vocab.size - 1):
        r = vocab.range_of(token)
        assert r.start <= token < r.stop
    with pytest.raises(ValueError):
        vocab.range_of(vocab.size)


def test_core_ids_do_not_depend_on_classes_or_apps():
    plain = Vocabulary([], [], 64)
    rich = Vocabulary(["x", "y", "z"], APPS, 64)
    assert np.array_equal(plain.core_layout(), rich.core_layout())
    assert rich.size == plain.size + 3 + (1 + 2) + (1 + 1)
    # apps sorted by name, then classes in the given order
    assert rich.ranges["app.aa"].start < rich.ranges["app.zz"].start < rich.ranges["class"].start
    assert rich.class_token("y") == rich.ranges["class"].start + 1


def test_cpp_codec_uses_the_same_layout():
    assert tuple(_core.tokenizer_range_names()) == CORE_RANGE_NAMES


def test_token_names():
    vocab = Vocabulary(["benign"], APPS, 64)
    assert vocab.token_name(vocab.id("ttl", 64)) == "ttl=64"
    assert vocab.token_name(vocab.special("BOS")) == "BOS"
    assert vocab.token_name(vocab.class_token("benign")) == "class=benign"
    assert vocab.token_name(vocab.app_begin("zz") + 2) == "app.zz:Y"
    with pytest.raises(ValueError):
        vocab.id("ttl", 256)


def test_json_round_trip_and_hash(tmp_path):
    vocab = Vocabulary(["benign", "syn_flood"], APPS, 100)
    vocab.save(tmp_path / "vocab.json")
    back = Vocabulary.load(tmp_path / "vocab.json")
    assert back == vocab and back.hash == vocab.hash and back.size == vocab.size
    assert back.ranges == vocab.ranges and back.payload_cap == 100
    # anything that changes the token layout or grammar changes the hash
    assert Vocabulary(["benign", "syn_flood"], APPS, 99).hash != vocab.hash
    assert Vocabulary(["syn_flood", "benign"], APPS, 100).hash != vocab.hash
    assert Vocabulary(["benign", "syn_flood"], APPS[:1], 100).hash != vocab.hash


@pytest.mark.parametrize(("edit", "message"), [
    (lambda b: b.update(hash="0" * 16), "does not match"),
    (lambda b: b.update(version=99), "version 99"),
    (lambda b: b.update(format="other"), "not a pytrafgen vocabulary"),
    (lambda b: b["classes"].append("sneaked_in"), "does not match"),
])
def test_tampered_json_is_rejected(tmp_path, edit, message):
    body = Vocabulary(["benign"], [], 64).to_json()
    edit(body)
    (tmp_path / "v.json").write_text(json.dumps(body))
    with pytest.raises(DatasetError, match=message):
        Vocabulary.load(tmp_path / "v.json")


def test_bad_arguments():
    with pytest.raises(DatasetError, match="payload cap"):
        Vocabulary([], [], 5000)
    with pytest.raises(DatasetError, match="duplicate"):
        Vocabulary(["a", "a"])


def test_iat_buckets_are_log_spaced_and_decode_inside_themselves():
    vocab = Vocabulary()
    edges, values = vocab.iat_edges_ns, vocab.iat_values_ns
    assert len(edges) == 63 and len(values) == 64
    assert edges[0] == 1_000 and edges[-1] == 1_000_000_000_000
    ratios = edges[1:] / edges[:-1]
    assert np.allclose(ratios, ratios[0], rtol=1e-3) and ratios[0] < 1.45
    # the value of bucket k lies in bucket k
    assert np.array_equal(np.searchsorted(edges, values, side="right"), np.arange(64))


def test_table_lists_every_range():
    vocab = Vocabulary(["benign"], APPS, 64)
    rows = vocab.table()
    assert [r["field"] for r in rows] == list(vocab.ranges)
    seq = next(r for r in rows if r["field"] == "seq.b3")
    assert (seq["width_bits"], seq["encoding"], seq["last"] - seq["first"] + 1) == (8, "digit", 256)
