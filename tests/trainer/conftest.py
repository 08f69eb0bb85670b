"""Tests of the trainer side (trainer-image/): the launcher, checkpoints, the example scripts.

Tests that start real torch processes are marked ``torch``; they still run in ``make test``.
"""

from __future__ import annotations

from pathlib import Path

TRAINER_IMAGE = Path(__file__).resolve().parents[2] / "trainer-image"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "tensorflow: starts real TensorFlow workers (skipped, with one line, where tensorflow is not importable)")
