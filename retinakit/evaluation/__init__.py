"""Evaluation: scoring against repeats (:mod:`.metrics`), per-cell tables (:mod:`.tables`), LN vs CNN (:mod:`.compare`), figures."""

from __future__ import annotations

from .metrics import score

__all__ = ["score"]
