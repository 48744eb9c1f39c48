"""Model and training settings of the AR generator, with the named sizes.

``tiny`` is for tests (seconds on a CPU; flows cut at the context unless
``continuation_buckets`` is given); ``small`` (~12M parameters with a 4k vocabulary)
fine-tunes on the shared captures on a 2-core CPU in minutes; ``base`` (~90M) is the GPU size.
The vocabulary size always comes from the dataset's vocabulary at fit time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from pytrafgen.errors import PytrafgenError


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 4096
    block_size: int = 256  # context window in tokens (= the longest flow sampling emits)
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    lora_rank: int = 0  # > 0: attention/MLP projections get rank-r adapters (fine-tuning)
    lora_alpha: float = 16.0
    # Every position also gets the embedding of its flow's class token (the token after the
    # flow's BOS), so conditioning does not hinge on attention back to position 1. Off for
    # checkpoints saved before it existed; the named sizes turn it on.
    class_conditioning: bool = False
    bos_token: int = -1  # set from the vocabulary at fit time; needed by class_conditioning
    # Whole flows past the context (continuation.py): > 0 appends a CONT token and this many
    # packets-so-far buckets after the tokenizer's vocabulary (vocab_size counts them), and
    # flows longer than the context are trained and sampled as continued segments. 0 (every
    # checkpoint saved before it existed): flows are cut at the context.
    continuation_buckets: int = 0
    continuation_context: int = 4  # packets of the previous segment a continuation repeats

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16  # windows per step per process
    lr: float = 6e-4
    min_lr_ratio: float = 0.1  # cosine decay down to lr * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100  # steps between validation-loss estimates
    eval_batches: int = 8
    patience: int = 5  # evaluations without improvement before early stopping (0: never)
    checkpoint_every: int = 200  # steps between resumable checkpoints (0: only at the end)
    replay: float = 0.2  # fine-tuning: share of windows drawn from benign flows
    compile: bool = False
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# Model shape and the training defaults that suit it. Context/batch of `small` are chosen so a
# 2-core CPU runs a step in about a second (see docs/training.md).
SIZES: dict[str, tuple[GPTConfig, TrainConfig]] = {
    "tiny": (
        GPTConfig(block_size=256, n_layer=2, n_head=2, n_embd=64, class_conditioning=True),
        TrainConfig(steps=30, batch_size=8, lr=3e-3, warmup_steps=5, eval_every=10, eval_batches=2,
                    checkpoint_every=0),
    ),
    "small": (
        GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, class_conditioning=True,
                  continuation_buckets=14),
        TrainConfig(steps=300, batch_size=4, lr=1e-3, warmup_steps=20, eval_every=50, eval_batches=4,
                    checkpoint_every=100),
    ),
    "base": (
        GPTConfig(block_size=1024, n_layer=12, n_head=12, n_embd=768, class_conditioning=True,
                  continuation_buckets=14),
        TrainConfig(steps=20000, batch_size=32, lr=6e-4, warmup_steps=500, eval_every=500,
                    eval_batches=20, checkpoint_every=1000, compile=True),
    ),
}


def size_config(size: str, vocab_size: int, **overrides: Any) -> tuple[GPTConfig, TrainConfig]:
    """The named size with the vocabulary size set and any overrides applied (None is ignored)."""
    if size not in SIZES:
        raise PytrafgenError(f"unknown model size {size!r}; choose one of {', '.join(SIZES)}")
    model, train = SIZES[size]
    model = replace(model, vocab_size=vocab_size)
    model_keys = {f.name for f in fields(GPTConfig)}
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - model_keys - train_keys
    if unknown:
        raise PytrafgenError(f"unknown training settings: {', '.join(sorted(unknown))}")
    model = replace(model, **{k: v for k, v in overrides.items() if k in model_keys and v is not None})
    train = replace(train, **{k: v for k, v in overrides.items() if k in train_keys and v is not None})
    return model, train


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    batch_size: int = 256
    max_len: int = 0  # 0: the model's context
    compile: bool = False  # torch.compile the decode step (CUDA graphs on GPU)
    # "stream": one refilled pool of rows, head only over allowed tokens (see sample.py);
    # "batch": fixed batches with the full head, the shapes a compiled step needs (compile)
    strategy: str = "stream"
    # stream strategy on a CPU: keys and values kept as float16 where the AVX-512 kernel reads
    # them (half the bytes a step reads; logits within ~1e-2, next-token KL ~1e-8 of float32
    # for the bundled default); False keeps them float32
    half_cache: bool = True
    # stream strategy on a CPU with AVX-512: keys and values kept as int8 with a scale per slot
    # (quantize_slots; 52 bytes a 48-wide slot instead of float16's 96), ahead of half_cache;
    # next-token KL ~5e-6 per token of a float32 cache for the bundled default
    # (benchmarks/results/ar_cache_kl.md); False: float16 (half_cache) or float32
    int8_cache: bool = True
    # stream strategy on a CPU with native bfloat16 dot products (AVX512-BF16 or AMX; ignored
    # elsewhere): the attention and MLP projections multiply in bfloat16 (``bf16_linear_copy``),
    # a decoding step's matrix products three to four times as fast, at the price of rounding
    # their inputs and results to 8 significant bits (next-token KL ~6e-6 per token of float32
    # for the bundled default, benchmarks/results/ar_bf16_kl.md); False keeps them float32
    bf16_linears: bool = True
    # stream strategy with bfloat16 projections on a CPU with AVX512-BF16: each decoding step in
    # one C++ call (fused_step.py) instead of ~100 torch operators, the same roundings; False:
    # the torch operators (GPT.decode_rows)
    fused_step: bool = True
    # a model with continuation tokens: a flow is closed after this many packets at the latest
    # (it may end earlier, when the model emits EOS); 0: no cap
    max_flow_packets: int = 10000
