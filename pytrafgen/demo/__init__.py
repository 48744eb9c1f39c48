"""The bundled default: a small CC0 corpus, a default AR checkpoint, and ``pytrafgen demo``."""
