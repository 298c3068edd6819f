"""Evaluation against NewtonBench: object tracking in generated clips, physics and visual metrics, reports."""
