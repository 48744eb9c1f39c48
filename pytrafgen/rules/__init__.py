"""Rule plumbing shared by the protocols' compliance rules and the evaluation suite: what a
rule sees (``context.RuleContext``) and vectorised header-byte reads (``packet_bytes``).

It sits below both ``pytrafgen.protocols`` and ``pytrafgen.evaluate`` and imports neither, so
protocol rules do not depend on the evaluation code.
"""
