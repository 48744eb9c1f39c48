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
    # packets changed per field between raw and final; None for a set read from a pcap
    out["repairs"] = None if generated.repairs is None else dict(generated.repairs)
    out["tshark"] = tshark_oracle(generated) if use_tshark else {"skipped": "disabled (--no-tshark)"}
    out["settings"] = {
        "packet_pass": "violates no packet-scope rule",
        "flow_pass": "violates no flow-scope rule and holds no failing packet",
        "raw": "the records as sampled: the generator's own derived fields where it emits them, no repair",
        "final": "packets as built: conformed to their protocols (pytrafgen.conform), lengths and checksums "
                 "repaired; 'repairs' counts the packets changed per field",
    }
    return out


def rules_markdown(protocols: Mapping[str, ProtocolSpec] | None = None) -> str:
    """docs/rules.md: every registered rule with its id, protocol, scope and description."""
    rules = all_rules(protocols)
    lines = ["# Compliance rules", "",
             "Generated by `pytrafgen rules --markdown` from the loaded plugins; "
             f"{len(rules)} rules. Packet-scope rules judge single packets, flow-scope rules whole "
             "flows; how pass rates are computed is in the docstring of `pytrafgen/evaluate/compliance.py`.",
             ""]
    by_protocol: dict[str, list[Rule]] = {}
    for rule in rules:
        by_protocol.setdefault(rule.protocol, []).append(rule)
    for protocol in sorted(by_protocol):
        lines += [f"## {protocol}", "", "| id | scope | rule |", "|---|---|---|"]
        lines += [f"| {r.id} | {r.scope} | {r.description} |" for r in by_protocol[protocol]]
        lines.append("")
    return "\n".join(lines)
