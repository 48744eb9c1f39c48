"""The built-in autoregressive generator ``ar`` (docs/training.md): ``config`` (named sizes),
``model`` (the GPT and its KV cache), ``data`` (flows → training windows), ``train`` (the loop),
``sample`` (grammar-constrained batched sampling), ``tokens`` (what it takes from the tokenizer),
``generator`` (``ARGenerator``, registered by ``pytrafgen.generators.builtin``)."""
