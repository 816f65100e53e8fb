"""SELF-GUIDE's prompts, at their old path: they live in
:mod:`engine.methods.selfguide.prompts` (kept so code that imports them from here keeps
working)."""

from __future__ import annotations

from .selfguide.prompts import (
    ANNOTATE_SYSTEM,
    GENERATE,
    GENERATE_CONDITIONAL,
    RULE,
    TEMPLATE_VARS,
)

__all__ = ("ANNOTATE_SYSTEM", "GENERATE", "GENERATE_CONDITIONAL", "RULE", "TEMPLATE_VARS")
