"""CodecLM's options: the ``[method.codeclm]`` table and its template overrides.

The defaults are the paper's (App. A.3, section 5.3); docs/methods/codeclm.md sets each
beside the paper's value, and ``tests/unit/methods/test_defaults_tables.py`` checks that
table against these Structs. :func:`check_options` checks what a Struct cannot express
(template placeholders, the dedup extra) before any call, with the file, line and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from ...config import Base, Config, locate_key
from ...dedup.semantic import SemanticDedupConfig, require_extra
from ...errors import ConfigError
from ...stages import check_templates
from ..custom import MethodConfig
from . import prompts as P

__all__ = ("CodecLMConfig", "CodecLMTemplates", "check_options")


class CodecLMTemplates(Base, frozen=True):
    """``[method.codeclm.templates]``: prompt overrides (``{{var}}`` placeholders)."""

    encode: str = P.ENCODE
    decode: str = P.DECODE
    rubrics: str = P.RUBRICS
    improve: str = P.IMPROVE
    respond: str = P.RESPOND
    judge: str = P.JUDGE
    check_metadata: str = P.CHECK_METADATA


class CodecLMConfig(MethodConfig, frozen=True):
    """``[method.codeclm]`` — defaults are the paper's (App. A.3, section 5.3).

    Attributes:
        metadata_count: metadata items after augmentation (paper: 200).
        instructions_per_metadata: basic instructions decoded per metadata item. The
            budget ``metadata_count x instructions_per_metadata`` counts *basic
            instructions* (the paper's 2,000), not kept pairs: Contrastive Filtering keeps
            a share of them (the paper-default config kept 1,453 of 2,000 on the sim).
        target_pairs: run until this many pairs are kept (None: one pass over the
            budget). Metadata items are then made past ``metadata_count`` by cycling
            over them with fresh basic instructions (another decode sample), and no new
            item starts once enough pairs are kept (items in flight still finish, so
            the count can be exceeded by up to max_items_in_flight x
            instructions_per_metadata). A rerun counts the kept rows already committed.
        target_max_passes: with ``target_pairs``, stop after this many passes over the
            metadata items even if fewer pairs are kept (a bound on the spend).
        metadata_check: ask the judge whether each augmented combination of use case and
            skills is reasonable, and draw again for the ones it refuses (the paper's
            authors removed unreasonable combinations by hand; an addition, off).
        metadata_check_rounds: check-and-redraw rounds (combinations still unchecked
            after them are used as drawn, and counted in the report).
        max_skills: skills per metadata item (paper: at most 3).
        rubric_count: rubrics and actions per metadata item (paper: 4).
        theta: keep a pair when |gap| > theta (paper: 3, on a 1-10 scale).
        max_iterations: iterations per instruction, basic generation counting as 1 (paper: 4).
        temperature: sampling temperature of encode, decode, rubrics, improve (paper: 0.7).
        max_tokens: max tokens of generation stages (paper: 1024 with PaLM).
        response_temperature: sampling temperature of the strong and target answers.
        response_max_tokens: max tokens of an answer.
        judge_temperature: judge sampling temperature (paper's evaluation judge: 0).
        judge_max_tokens: max tokens of a judge reply.
        encode_concurrency: seeds encoded at once during prepare.
        templates: prompt overrides.
        semantic_dedup: embedding near-duplicate check of each instruction before its
            responses are paid for and again when it is kept (off by default; docs/dedup.md).
    """

    metadata_count: Annotated[int, msgspec.Meta(ge=1)] = 200
    instructions_per_metadata: Annotated[int, msgspec.Meta(ge=1)] = 10
    max_skills: Annotated[int, msgspec.Meta(ge=1)] = 3
    rubric_count: Annotated[int, msgspec.Meta(ge=1)] = 4
    theta: Annotated[float, msgspec.Meta(ge=0)] = 3.0
    max_iterations: Annotated[int, msgspec.Meta(ge=1)] = 4
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    response_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    response_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    judge_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0
    judge_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 32
    encode_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 64
    target_pairs: Annotated[int, msgspec.Meta(ge=1)] | None = None
    target_max_passes: Annotated[int, msgspec.Meta(ge=1)] = 20
    metadata_check: bool = False
    metadata_check_rounds: Annotated[int, msgspec.Meta(ge=1)] = 3
    templates: CodecLMTemplates = msgspec.field(default_factory=CodecLMTemplates)
    semantic_dedup: SemanticDedupConfig = msgspec.field(default_factory=SemanticDedupConfig)


def check_options(cfg: CodecLMConfig, config: Config) -> None:
    """What the Struct cannot check: every template's placeholders, and the dedup extra
    when semantic dedup is on.

    Raises:
        ConfigError: a template uses a placeholder its stage does not fill (with the
            config file, line and key), or semantic dedup lacks its extra.
    """
    try:
        check_templates(cfg.templates, P.TEMPLATE_VARS, prefix="method.codeclm.templates")
    except ConfigError as exc:
        raise _located(exc, config) from None
    if cfg.semantic_dedup.enabled:
        require_extra(
            config, "method.codeclm.semantic_dedup", default_model=not cfg.semantic_dedup.model
        )


def _located(exc: ConfigError, config: Config) -> ConfigError:
    """``exc`` with the place of its key: the config file and line, or ``--set``."""
    field = exc.field or ""
    if field in config.overridden:
        return ConfigError(exc.reason, path="--set", field=field, hint=exc.hint)
    text = None
    if config.source:
        try:
            text = Path(config.source).read_text(encoding="utf-8")
        except OSError:
            text = None
    return ConfigError(
        exc.reason,
        path=config.source or None,
        line=locate_key(text, field) if text else None,
        field=field,
        hint=exc.hint,
    )
