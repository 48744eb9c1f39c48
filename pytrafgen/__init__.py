"""pytrafgen: learn from real packet captures and generate labeled, fine-grained network traffic."""

from __future__ import annotations

from pytrafgen.errors import CaptureError, PytrafgenError
from pytrafgen.hookspecs import hookimpl
from pytrafgen.records import FieldRecords

__all__ = ["CaptureError", "FieldRecords", "PytrafgenError", "hookimpl"]
