"""Typed errors. The CLI prints any PytrafgenError as one line, without a traceback."""

from __future__ import annotations


class PytrafgenError(Exception):
    """Base class for every error pytrafgen raises on purpose (bad input, bad usage)."""


class CaptureError(PytrafgenError):
    """A capture file cannot be read: names the file and the byte offset where it went wrong."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = str(path)
        self.offset = int(offset)
        self.reason = reason
        super().__init__(f"{self.path}: at byte {self.offset}: {reason}")


class TokenError(PytrafgenError):
    """A token sequence does not follow the tokenizer's grammar."""


class DatasetError(PytrafgenError):
    """A tokenized dataset directory is missing, incomplete or built with another vocabulary."""


class CheckpointError(PytrafgenError):
    """A generator checkpoint is missing, incomplete or of an unknown kind."""


class PluginError(PytrafgenError):
    """A plugin, or a name looked up in the plugin registry, is unavailable."""


class ReplayError(PytrafgenError):
    """Replay cannot run safely (no root, missing target server, forbidden destination)."""


class OutputError(PytrafgenError):
    """An output path holds something pytrafgen did not write (refused unless --force)."""
