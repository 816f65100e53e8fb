"""``[method.backtranslation]``: the options, their defaults (the paper's where it gives
them) and the checks a Struct cannot express."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from ...config import Base, locate_key
from ...config import Config as RunConfig
from ...errors import ConfigError
from ...stages import check_templates
from ..custom import MethodConfig
from . import prompts as P

__all__ = ("BacktranslationConfig", "BacktranslationTemplates", "Role", "check_config")

Role = Literal["strong", "target", "judge"]
"""A configured role (every one falls back to ``strong`` when ``[roles]`` omits it)."""


class BacktranslationTemplates(Base, frozen=True):
    """``[method.backtranslation.templates]``: prompt overrides (``{{var}}`` placeholders)."""

    backtranslate: str = P.BACKTRANSLATE
    curate: str = P.CURATE


class BacktranslationConfig(MethodConfig, frozen=True):
    """``[method.backtranslation]`` — generation and curation defaults are the paper's.

    Attributes:
        corpus: corpus file or directory, relative to the config file (None: ``run.input``,
            which must be a file; set this to read a directory).
        text_field: JSONL field holding the segment text.
        header_field: JSONL field holding the segment's header (optional per record).
        id_field: JSONL field holding the document id (else ``file:line``).
        min_chars: drop segments shorter than this (ours; the paper's bounds are unverified).
        max_chars: drop segments this long or longer (ours).
        max_header_caps_ratio: drop segments whose header's share of capital letters is
            higher (paper's heuristic; the ratio is ours). 1.0 disables it.
        require_header: drop HTML/Markdown text that follows no heading (paper: segments
            are text following a header).
        dedup: drop repeated segments (normalised text).
        dedup_exact: exact dedup (memory grows ~70 bytes per distinct segment) instead of
            the default fixed-memory Bloom filter (a new segment is taken for a repeat with
            probability about ``dedup_error_rate`` up to ``dedup_capacity`` segments).
        dedup_capacity: segments the Bloom filter is sized for (10 million: 18 MB).
        dedup_error_rate: the Bloom filter's false-duplicate rate at capacity.
        backtranslate_role: role that writes the instruction (paper: backward model M_yx).
        backtranslate_header: show the segment's heading to the backward model (paper: the
            backward model sees the output alone; off).
        temperature: instruction sampling temperature (paper: 0.7).
        top_p: instruction nucleus sampling (paper: 0.9).
        max_tokens: max tokens of an instruction.
        judge_role: role that curates; None: the role that augmented (paper: the model
            curates its own augmentation, "self-curation").
        curation_samples: judge samples per pair, scores averaged (paper: 1).
        judge_temperature: judge temperature (None: 0 for one sample, 0.7 for several).
        judge_max_tokens: max tokens of a judge reply (brief reasoning + score line).
        threshold: keep when score >= this (paper: A5 = score 5, "score >= 4.5" in its
            section 3.3, the set Humpback is trained on; 4 gives A4).
        rescore_with: roles that re-score every candidate, one round each, in order (the
            paper's iteration: serve M1, then M2, and name their roles); the last round's
            score decides. Empty: one round.
        tag: system prompt of augmented rows (paper: S_w).
        seed_tag: system prompt of seed rows in the training mix (paper: S_a).
        seeds: seed file (JSONL of instruction/response pairs, relative to the config
            file; paper: 3,200 OpenAssistant pairs). With it, ``finalize`` writes the
            training mix of seed (S_a) and kept (S_w) pairs. None: no mix.
        seed_instruction_field: seed records' instruction field.
        seed_response_field: seed records' response field.
        templates: prompt overrides.
    """

    corpus: str | None = None
    text_field: str = "text"
    header_field: str = "title"
    id_field: str = "id"
    min_chars: Annotated[int, msgspec.Meta(ge=1)] = 200
    max_chars: Annotated[int, msgspec.Meta(ge=2)] = 6000
    max_header_caps_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.6
    require_header: bool = True
    dedup: bool = True
    dedup_exact: bool = False
    dedup_capacity: Annotated[int, msgspec.Meta(ge=1)] = 10_000_000
    dedup_error_rate: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.001
    backtranslate_role: Role = "strong"
    backtranslate_header: bool = False
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.9
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 256
    judge_role: Role | None = None
    curation_samples: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    judge_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    judge_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 256
    threshold: Annotated[float, msgspec.Meta(ge=1, le=5)] = 4.5
    rescore_with: Role | list[Role] = msgspec.field(default_factory=list)
    tag: str = P.S_W
    seed_tag: str = P.S_A
    seeds: str | None = None
    seed_instruction_field: str = "instruction"
    seed_response_field: str = "response"
    templates: BacktranslationTemplates = msgspec.field(default_factory=BacktranslationTemplates)

    @property
    def curator(self) -> Role:
        """The role that curates: ``judge_role``, else the one that augmented."""
        return self.judge_role if self.judge_role is not None else self.backtranslate_role

    @property
    def rescore_roles(self) -> list[Role]:
        """The rescoring rounds' roles, in order."""
        return (
            [self.rescore_with] if isinstance(self.rescore_with, str) else list(self.rescore_with)
        )

    @property
    def judge_sampling_temperature(self) -> float:
        """The judge's temperature: ``judge_temperature``, else 0 for one sample and 0.7
        for several (averaging identical greedy samples would measure nothing)."""
        if self.judge_temperature is not None:
            return self.judge_temperature
        return 0.0 if self.curation_samples == 1 else 0.7


def check_config(cfg: BacktranslationConfig, config: RunConfig) -> None:
    """Check what the Struct cannot: every template uses only its own placeholders.

    Raises:
        ConfigError: a template uses an unknown placeholder (with the config file, the
            template's line and key, and the placeholders it may use).
    """
    prefix = "method.backtranslation.templates"
    try:
        check_templates(cfg.templates, P.TEMPLATE_VARS, prefix=prefix)
    except ConfigError as exc:
        if exc.path is not None or not config.source or exc.field is None:
            raise
        if exc.field in config.overridden:
            raise ConfigError(exc.reason, path="--set", field=exc.field, hint=exc.hint) from exc
        try:
            text = Path(config.source).read_text(encoding="utf-8")
        except OSError:
            text = None
        raise ConfigError(
            exc.reason,
            path=config.source,
            line=locate_key(text, exc.field) if text else None,
            field=exc.field,
            hint=exc.hint,
        ) from exc
