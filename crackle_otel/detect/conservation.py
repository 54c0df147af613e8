"""Placeholder until the detector lands (same session)."""

from __future__ import annotations


def detect(matrix, profile):
    return []
