"""``[method.lab]``: LAB's options (InstructLab SDG's defaults) and the checks a Struct
cannot express (template variables, the semantic-dedup extra), with file, line and key."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec

from ...config import Base, Config, locate_key
from ...dedup.semantic import SemanticDedupConfig, require_extra
from ...errors import ConfigError
from ...stages import check_templates
from ..custom import MethodConfig
from . import prompts as P
from .mix import LabMix

__all__ = ("LabConfig", "LabTemplates", "check_config")


class LabTemplates(Base, frozen=True):
    """``[method.lab.templates]``: prompt overrides (``{{var}}`` placeholders)."""

    system: str = P.SYSTEM
    gen_questions: str = P.GEN_QUESTIONS
    gen_contexts: str = P.GEN_CONTEXTS
    gen_grounded_questions: str = P.GEN_GROUNDED_QUESTIONS
    eval_question: str = P.EVAL_QUESTION
    gen_responses: str = P.GEN_RESPONSES
    eval_pair: str = P.EVAL_PAIR
    spellcheck: str = P.SPELLCHECK
    gen_knowledge: str = P.GEN_KNOWLEDGE
    eval_faithfulness: str = P.EVAL_FAITHFULNESS
    eval_relevancy: str = P.EVAL_RELEVANCY
    eval_verify_question: str = P.EVAL_VERIFY_QUESTION
    simple_skill: str = P.SIMPLE_SKILL
    simple_knowledge: str = P.SIMPLE_KNOWLEDGE


class LabConfig(MethodConfig, frozen=True):
    """``[method.lab]`` — defaults are InstructLab SDG's (``full`` pipeline).

    Attributes:
        pipeline: ``full`` (generation + teacher-as-critic filters) or ``simple``.
        taxonomy: taxonomy root directory, relative to the config file (default:
            ``run.input``, which names the taxonomy directory; a file there means its
            directory).
        num_samples: questions asked for in one gen_questions call, one call per seed
            example (SDG freeform_skills.yaml batch_kwargs num_samples: 30).
        num_contexts: contexts generated per seed example of a grounded leaf (SDG
            gen_contexts: n=10 per seed row).
        grounded_questions: questions asked for in one call per context (SDG
            gen_grounded_questions num_samples: 3).
        chunk_word_count: words per document chunk (SDG: 1000).
        spellcheck: also use a spell-corrected copy of every chunk (SDG gen_spellcheck).
        knowledge_samples: gen_knowledge calls per chunk version.
        icl_pairs: seed QA pairs shown to gen_knowledge (SDG: 3).
        num_instructions_to_generate: generations per leaf of the simple pipeline (30).
        min_pair_score: keep a skill pair whose 1-3 score is at least this (SDG: 2).
        temperature: sampling temperature of generation (SDG forces 0.7 for n > 1).
        max_tokens: max tokens of a generation.
        response_temperature: temperature of responses and spellcheck (SDG default: 0).
        response_max_tokens: max tokens of a response.
        judge_temperature: judge temperature (SDG default: 0).
        judge_max_tokens: max tokens of a judge reply.
        templates: prompt overrides.
        mix: the phase sets (system turn, RAFT, skills per leaf, auxiliary instructions)
            and the ``mixed.jsonl`` recipe.
        semantic_dedup: embedding near-duplicate filter on questions (off by default).
        foundational_skills: also read ``foundational_skills/`` leaves, as compositional
            skills (InstructLab's data generation skips them; so does the default).
        document_cache: directory of knowledge-repository checkouts, relative to the
            config file (None: ``~/.cache/synth-engine/knowledge``).
        mirrors: repository URL -> local path or URL to clone instead (offline use).
        git_timeout_s: bound of every git command.
    """

    pipeline: Literal["full", "simple"] = "full"
    taxonomy: str | None = None
    foundational_skills: bool = False
    document_cache: str | None = None
    mirrors: dict[str, str] = msgspec.field(default_factory=dict)
    git_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 300.0
    num_samples: Annotated[int, msgspec.Meta(ge=1)] = 30
    num_contexts: Annotated[int, msgspec.Meta(ge=1)] = 10
    grounded_questions: Annotated[int, msgspec.Meta(ge=1)] = 3
    chunk_word_count: Annotated[int, msgspec.Meta(ge=1)] = 1000
    spellcheck: bool = True
    knowledge_samples: Annotated[int, msgspec.Meta(ge=1)] = 1
    icl_pairs: Annotated[int, msgspec.Meta(ge=1)] = 3
    num_instructions_to_generate: Annotated[int, msgspec.Meta(ge=1)] = 30
    min_pair_score: Annotated[int, msgspec.Meta(ge=1, le=3)] = 2
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.7
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    response_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0
    response_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 1024
    judge_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.0
    judge_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 512
    templates: LabTemplates = msgspec.field(default_factory=LabTemplates)
    mix: LabMix = msgspec.field(default_factory=LabMix)
    semantic_dedup: SemanticDedupConfig = msgspec.field(default_factory=SemanticDedupConfig)


def check_config(cfg: LabConfig, config: Config) -> None:
    """Check ``[method.lab]`` beyond its Struct, before any call.

    Raises:
        ConfigError: a template uses a variable it is not given (with the file and line of
            its key, or ``--set``), or semantic dedup is enabled without its extra.
    """
    try:
        check_templates(cfg.templates, P.TEMPLATE_VARS, prefix="method.lab.templates")
    except ConfigError as exc:
        raise _located(exc, config) from None
    if cfg.semantic_dedup.enabled:
        require_extra(
            config, "method.lab.semantic_dedup", default_model=not cfg.semantic_dedup.model
        )


def _located(exc: ConfigError, config: Config) -> ConfigError:
    """``exc`` with the file and line of its key (``--set`` when it came from there)."""
    field = exc.field or "method.lab"
    if any(field == k or field.startswith(k + ".") for k in config.overridden):
        return ConfigError(exc.reason, path="--set", field=field, hint=exc.hint)
    text: str | None = None
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
