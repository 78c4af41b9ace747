"""Evaluation: scoring against repeats (:mod:`.metrics`), LN vs CNN (:mod:`.compare`), figures."""

from __future__ import annotations

from .metrics import score

__all__ = ["score"]
