"""The core metrics as validators, registered through ``register_validators`` exactly like a
third-party metric plugin. ``pytrafgen evaluate`` runs every registered validator; settings
common to all (``seed``, ``tshark``, ``k``, ``max_flows``, ``scarce_share``) come in the
``settings`` mapping and are echoed in each result."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pytrafgen.hookspecs import hookimpl
from pytrafgen.interfaces import Validator

if TYPE_CHECKING:
    from pytrafgen.evaluate.evalset import EvalSet

# The metric modules (scipy, scikit-learn) are imported when a metric runs, not when plugins
# load, so that every CLI start stays fast.


class ComplianceValidator(Validator):
    name = "compliance"
    description = "share of packets/flows passing every expert rule, raw and final; tshark oracle"

    def evaluate(self, real: EvalSet, generated: EvalSet, settings: Mapping[str, Any]) -> dict[str, Any]:
        from pytrafgen.evaluate.compliance import compliance

        return compliance(generated, generated.protocols_or(real.protocols),
                          use_tshark=bool(settings.get("tshark", True)))


class FidelityValidator(Validator):
    name = "fidelity"
    description = "per-field EMD (min-max scaled by the real range) and JSD, per class"

    def evaluate(self, real: EvalSet, generated: EvalSet, settings: Mapping[str, Any]) -> dict[str, Any]:
        from pytrafgen.evaluate.fidelity import fidelity

        return fidelity(real, generated)


class DiversityValidator(Validator):
    name = "diversity"
    description = "coverage and density (Naeem et al. 2020, k = 5) on standardised flow features"

    def evaluate(self, real: EvalSet, generated: EvalSet, settings: Mapping[str, Any]) -> dict[str, Any]:
        from pytrafgen.evaluate.diversity import diversity

        return diversity(real, generated, k=int(settings.get("k", 5)),
                         max_flows=int(settings.get("max_flows", 4000)), seed=int(settings.get("seed", 0)))


class MemorisationValidator(Validator):
    name = "memorisation"
    description = ("shares of generated flows copied exactly or nearly from training, beside the real test "
                   "flows' shares (the floor); nearest-neighbour distance ratio")

    def evaluate(self, real: EvalSet, generated: EvalSet, settings: Mapping[str, Any]) -> dict[str, Any]:
        if real.train is None:
            return {"skipped": "no real training split"}
        from pytrafgen.evaluate.copies import EDIT_SHARE
        from pytrafgen.evaluate.diversity import memorisation

        return memorisation(real.train, generated, real, max_flows=int(settings.get("max_flows", 4000)),
                            seed=int(settings.get("seed", 0)), edit_share=float(settings.get("edit_share", EDIT_SHARE)))


class UtilityValidator(Validator):
    name = "utility"
    description = "macro-F1 of five detectors: real, real+generated, TSTR, scarce, scarce+generated"

    def evaluate(self, real: EvalSet, generated: EvalSet, settings: Mapping[str, Any]) -> dict[str, Any]:
        from pytrafgen.evaluate.utility import utility

        return utility(real, generated, scarce_share=float(settings.get("scarce_share", 0.1)),
                       max_train=int(settings.get("max_train", 20000)), seed=int(settings.get("seed", 0)))


class ClassFidelityValidator(Validator):
    name = "class_fidelity"
    description = "a classifier trained on real flows labels generated flows; macro-F1, confusion"

    def evaluate(self, real: EvalSet, generated: EvalSet, settings: Mapping[str, Any]) -> dict[str, Any]:
        from pytrafgen.evaluate.class_fidelity import class_fidelity

        return class_fidelity(real, generated, max_train=int(settings.get("max_train", 20000)),
                              seed=int(settings.get("seed", 0)))


CORE_VALIDATORS: tuple[type[Validator], ...] = (
    ComplianceValidator, FidelityValidator, DiversityValidator, MemorisationValidator, UtilityValidator,
    ClassFidelityValidator,
)


@hookimpl
def register_validators(register: Callable[[Validator], None]) -> None:
    for cls in CORE_VALIDATORS:
        register(cls())
