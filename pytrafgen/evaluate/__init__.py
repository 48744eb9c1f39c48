"""The evaluation suite: compliance, fidelity, diversity, memorisation, utility and class
fidelity of generated traffic against real traffic (definitions in docs/evaluation.md,
following DESIGN.md §7). ``EvalSet`` holds one side; ``RuleContext`` is what compliance rules see."""

from __future__ import annotations
