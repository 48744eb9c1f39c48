"""Where the bundled default lives and how it was made.

The default AR checkpoint is trained by ``pytrafgen demo train-default`` on the bundled
corpus, tokenized with ``TOKENIZE_SETTINGS``; the demo tokenizes the corpus the same way, so
the dataset's vocabulary is the checkpoint's (checked by hash when the checkpoint is used).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pytrafgen.errors import PytrafgenError

# Long flows (one MQTT publish-flood connection) are cut into 32-packet flows, so every class
# has flows in every split and a flow fits the model's context.
TOKENIZE_SETTINGS = {"payload_cap": 64, "max_flow_packets": 32, "seed": 0}

# The default model: the `small` shape trained for a few hundred steps on a 2-core CPU.
TRAIN_SETTINGS = {"size": "small", "pretrain_steps": 300, "finetune_steps": 600, "seed": 0}


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
