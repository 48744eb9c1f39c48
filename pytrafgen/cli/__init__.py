"""The ``pytrafgen`` command line: one module per command group, each with ``register(app)``."""
