"""The simulator: one adapter set behind stagegate's ports, in its own package.

The simulated live world (simulator.world), its twin and the twin's calibration, the oracle (ground truth
for benchmarks), the recipe model families (simulator.models), the world's set-up and the demo, and the
adapters that serve that world through the ports (simulator.traffic, simulator.adapters). The core
(stagegate/), flows/ and gates/ never import this package: they reach it only through the entry points it
registers in pyproject.toml (tests/core/test_import_rules.py fails if they do).
"""
