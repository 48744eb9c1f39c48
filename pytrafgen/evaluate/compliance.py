"""Compliance: the share of packets and flows passing every applicable expert rule.

Every ``Rule`` of every registered protocol (``ProtocolSpec.rules()``) runs over a
``RuleContext``. A packet passes when it violates no packet-scope rule; a flow passes when it
violates no flow-scope rule and none of its packets fails. Each rule also gets its own pass
rate (1 − violating / applicable). This is done for the final packets (as built, derived
fields repaired) and, where the set has a raw version (written before repair), for the raw
ones — what the generator emitted against what the builder derived. tshark, where installed,
adds an independent opinion (``oracle.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pytrafgen.evaluate.evalset import EvalSet
from pytrafgen.interfaces import ProtocolSpec, Rule


def all_rules(protocols: Mapping[str, ProtocolSpec] | None = None) -> list[Rule]:
    """Every rule of every registered protocol, ordered by id; ids are unique."""
    if protocols is None:
        from pytrafgen.plugins import get_registry

        protocols = get_registry().protocols
    rules: dict[str, Rule] = {}
    for spec in protocols.values():
        for rule in spec.rules():
            rules.setdefault(rule.id, rule)
    return [rules[k] for k in sorted(rules)]


def run_rules(es: EvalSet, stage: str = "final",
              protocols: Mapping[str, ProtocolSpec] | None = None) -> dict[str, Any]:
    """Apply every rule to one set; per-rule figures, packet and flow pass rates."""
    if protocols is None:
        from pytrafgen.plugins import get_registry

        protocols = get_registry().protocols
    ctx = es.context(protocols, stage)
    packet_bad = np.zeros(es.n_packets, bool)
    flow_bad = np.zeros(es.n_flows, bool)
    per_rule: dict[str, Any] = {}
    for rule in all_rules(protocols):
        try:
            applicable, violating = rule.check(ctx)
        except Exception as exc:  # a plugin's broken rule is reported, never fatal
            per_rule[rule.id] = {"error": f"{type(exc).__name__}: {exc}", "protocol": rule.protocol}
            continue
        applicable = np.asarray(applicable, np.int64)
        violating = np.asarray(violating, np.int64)
        (packet_bad if rule.scope == "packet" else flow_bad)[violating] = True
        per_rule[rule.id] = {
            "protocol": rule.protocol, "scope": rule.scope, "applicable": len(applicable),
            "violating": len(violating),
            "pass_rate": float(1 - len(violating) / len(applicable)) if len(applicable) else None,
        }
    in_flow = es.flow_id >= 0
    flow_bad_any = flow_bad.copy()
    flow_bad_any[es.flow_id[in_flow & packet_bad]] = True
    per_class: dict[str, Any] = {}
    for c, name in enumerate(es.classes):
        fm = es.labels == c
        if fm.any():
            pm = in_flow & fm[np.maximum(es.flow_id, 0)]
            per_class[name] = {"packet_pass_rate": float(1 - packet_bad[pm].mean()) if pm.any() else None,
                               "flow_pass_rate": float(1 - flow_bad_any[fm].mean())}
    return {
        "stage": stage,
        "packets": es.n_packets,
        "flows": es.n_flows,
        "packet_pass_rate": float(1 - packet_bad.mean()) if es.n_packets else None,
        "flow_pass_rate": float(1 - flow_bad_any.mean()) if es.n_flows else None,
        "per_rule": per_rule,
        "per_class": per_class,
        "rules": len(per_rule),
    }


def compliance(generated: EvalSet, protocols: Mapping[str, ProtocolSpec] | None = None,
               use_tshark: bool = True) -> dict[str, Any]:
    """Final (and raw, where available) rule compliance plus the tshark oracle."""
    from pytrafgen.evaluate.oracle import tshark_oracle

    out: dict[str, Any] = {"final": run_rules(generated, "final", protocols)}
    out["raw"] = run_rules(generated.raw, "raw", protocols) if generated.raw is not None else {
        "skipped": "no raw (pre-repair) version of this set was given"}
    out["tshark"] = tshark_oracle(generated) if use_tshark else {"skipped": "disabled (--no-tshark)"}
    out["settings"] = {
        "packet_pass": "violates no packet-scope rule",
        "flow_pass": "violates no flow-scope rule and holds no failing packet",
        "raw": "packets written with the generator's own derived fields (repair off)",
        "final": "packets as built (lengths and checksums repaired)",
    }
    return out
