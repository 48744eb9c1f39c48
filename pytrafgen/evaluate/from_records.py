"""EvalSets straight from FieldRecords (a generator's output or a dataset split), built exactly
the way ``write_records`` / ``pytrafgen generate`` writes them: packets in time order (flows
placed in time by the builder), conformed to their protocols and lengths and checksums
repaired (or neither, for the raw set: the records as sampled; ``EvalSet.repairs`` counts what
conforming changed per field). Each
assembled flow takes the class of the record flow its first packet was built from
(``pytrafgen.flow_labels``), so the labels ``compare`` uses are those ``generate`` writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytrafgen.evaluate.evalset import EvalSet, evalset_from_tables
from pytrafgen.protocol_spec import ProtocolSpec
from pytrafgen.records import FieldRecords


def evalset_from_records(records: FieldRecords, plan: Any, seed: int, name: str, repair: bool = True,
                         kinds: dict[str, str] | None = None, *,
                         protocols: Mapping[str, ProtocolSpec]) -> EvalSet:
    """The set ``records`` make when written (see the module doc); ``protocols`` (name -> spec)
    conform the flows and become the set's ``EvalSet.protocols``."""
    from pytrafgen.build import build_frames
    from pytrafgen.flow_labels import label_built_flows

    built = build_frames(records, plan, seed, repair=repair, time_order=True, conform=repair, protocols=protocols)
    labels = label_built_flows(built, records)
    es = evalset_from_tables([(built.to_table(), labels.classes)], name, kinds, [f"<{name}: built from records>"])
    es.repairs = dict(built.repairs)
    es.protocols = protocols
    return es
