"""Where the bundled default lives and how it was made.

The default AR checkpoint is trained by ``pytrafgen demo train-default`` on the bundled
corpus, tokenized with ``TOKENIZE_SETTINGS``; the demo tokenizes the corpus the same way, so
the dataset's vocabulary is the checkpoint's (checked by hash when the checkpoint is used).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TypedDict

from pytrafgen.errors import PytrafgenError


class TokenizeSettings(TypedDict):
    """Keyword arguments of ``tokenize_captures`` the default is made with."""

    payload_cap: int
    max_flow_packets: int
    seed: int


# Whole flows (no packet cap): the model learns flows past its context as continued segments
# (docs/training.md), so a long MQTT session or a publish flood stays one flow. A class with
# fewer than 3 flows (the corpus's one publish-flood connection) is all in the train split.
TOKENIZE_SETTINGS: TokenizeSettings = {"payload_cap": 16, "max_flow_packets": 0, "seed": 0}

# The default model: a `tiny`-based shape widened to 192 with a 1024-token context (≈ 16
# packets per segment), class-conditioned at every position, with continuation tokens,
# trained on a 2-core CPU in about 40 minutes (about 1 s per step).
MODEL_SETTINGS = {"size": "tiny", "n_embd": 192, "n_layer": 4, "n_head": 4, "block_size": 1024,
                  "batch_size": 4, "warmup_steps": 50, "eval_every": 50, "eval_batches": 4,
                  "checkpoint_every": 100, "seed": 0,
                  "continuation_buckets": 14}
STAGE_STEPS = {"pretrain": 300, "finetune": 1800}
# ``train-default --warm-start CKPT``: an earlier default without continuation tokens gets them
# (embedding rows added) and trains on for these steps instead (pytrafgen/data/README.md)
WARM_START_STEPS = {"pretrain": 100, "finetune": 400}


def data_dir() -> Path:
    return Path(str(resources.files("pytrafgen") / "data"))


def corpus_dir() -> Path:
    path = data_dir() / "corpus"
    if not (path / "manifest.csv").is_file():
        raise PytrafgenError(f"the bundled corpus is missing from {path}; reinstall pytrafgen")
    return path


def default_checkpoint() -> Path:
    path = data_dir() / "default_model"
    if not (path / "config.json").is_file():
        raise PytrafgenError(
            f"the bundled default checkpoint is missing from {path}; build it with "
            "`pytrafgen demo train-default` or reinstall pytrafgen"
        )
    return path
