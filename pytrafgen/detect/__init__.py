"""Malicious-traffic detectors trained on real (and generated) flows: flow features, models
(forest, boosting, transformer, logreg, knn, mlp), training with a held-out real split,
streaming runs over captures, and evaluation. See docs/detect.md; the CLI is ``pytrafgen detect``."""

from __future__ import annotations

from pytrafgen.detect.data import FlowSettings, LabeledFlows, load_labeled
from pytrafgen.detect.evaluate import evaluate_detectors, write_report
from pytrafgen.detect.features import FEATURE_NAMES, detect_features
from pytrafgen.detect.model import KINDS, Detector, DetectorError, DetectorHeader, load_detector
from pytrafgen.detect.run import VERDICT_COLUMNS, run_detector
from pytrafgen.detect.train import TrainResult, train_detector
from pytrafgen.evaluate.evalset import read_manifest

__all__ = ["FEATURE_NAMES", "KINDS", "VERDICT_COLUMNS", "Detector", "DetectorError", "DetectorHeader", "FlowSettings",
           "LabeledFlows", "TrainResult", "detect_features", "evaluate_detectors", "load_detector", "load_labeled",
           "read_manifest", "run_detector", "train_detector", "write_report"]
