"""Malicious-traffic detectors trained on real (and generated) flows: features, models,
training, streaming runs over captures and evaluation. See docs/detect.md."""
