"""The import path older plugins use for ``RuleContext``; the rule plumbing now
lives in ``pytrafgen.rules.context`` (below ``evaluate/``, so protocol rules need no evaluation
code). Kept so existing third-party rules keep importing."""

from __future__ import annotations

from pytrafgen.rules.context import DirectionStream, FlowStreams, RuleContext

__all__ = ["DirectionStream", "FlowStreams", "RuleContext"]
