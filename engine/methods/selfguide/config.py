"""``[method.selfguide]``: the options, what they resolve to for a task, and the checks
a Struct cannot express.

Options left at ``None`` take the per-task-type value of the reference pipelines
(:func:`settings_for`); ``top_k`` and ``best_of`` are sent or not per
``sampling_extensions`` and the endpoint (:func:`sends_extensions`, :func:`sampling_for`).
:func:`check_options` runs in ``validate`` and before the first call, and names the
file, line and key of what it refuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypedDict
from urllib.parse import urlsplit

import msgspec

from ...config import Base, locate_key
from ...config import Config as RunConfig
from ...dedup.semantic import SemanticDedupConfig, require_extra
from ...errors import ConfigError
from ...io.tasks import TaskType
from ...stages import check_templates
from ..custom import MethodConfig
from . import prompts as P

__all__ = (
    "Sampling",
    "SelfGuideConfig",
    "SelfGuideTemplates",
    "Settings",
    "check_options",
    "refuses_extensions",
    "sampling_for",
    "sends_extensions",
    "settings_for",
)

FIELD = "method.selfguide"
"""The options' table, as errors name it."""


class SelfGuideTemplates(Base, frozen=True):
    """``[method.selfguide.templates]``: prompt overrides (``{{var}}`` placeholders).

    Attributes:
        generate: input generation (``instruction``, ``high_quality``, ``low_quality``).
        generate_conditional: classification input generation (also ``label``).
        annotate_system: the annotator's system message.
    """

    generate: str = P.GENERATE
    generate_conditional: str = P.GENERATE_CONDITIONAL
    annotate_system: str = P.ANNOTATE_SYSTEM


class SelfGuideConfig(MethodConfig, frozen=True):
    """``[method.selfguide]`` — defaults are the reference code's (spec section 3 (c)).

    Options left at ``None`` take the per-task-type default of the reference pipelines.

    Attributes:
        role: endpoint role of the student model (``target`` falls back to ``strong``).
        generation_rounds: input-generation rounds (reference ``generation_epochs``: 10-200).
        per_round: prompts per round, sent concurrently (reference: 10).
        generation_temperature: None -> 0.9 (generation) / 0.7 (classification).
        generation_max_tokens: max tokens of a generated input (reference: 500).
        generation_top_k: ``top_k`` of input generation (reference: 40; None: not sent).
        max_low_quality: at most this many previous inputs per prompt (reference: 10).
        context_tokens: prompt budget in estimated tokens (~4 chars each; reference: 3000).
        prompt_rebuilds: tries at a different sample for a prompt over the budget; then the
            low-quality section is left out ("N/A").
        input_length_filter: None -> off (generation) / on (classification).
        output_length_filter: None -> on (generation) / off (classification: the reference
            pipeline forces the output constraint off).
        length_sd: the length filters keep mean ± this many standard deviations (2).
        noise_filter: apply the noise phrase filter to inputs and outputs.
        default_noise_phrases: include the reference's 14 greetings
            (``engine.methods.selfguide.rules.GREETINGS``).
        noise_phrases: extra phrases, added to the task file's ``noise_phrases``.
        dedup_examples: also drop candidates equal to a gold example input.
        annotate_n: samples per input for the vote (reference: 10).
        annotate_temperature: sampling temperature of the annotation (reference: 0.2).
        annotate_max_tokens: max tokens of an output (reference: 500).
        annotate_top_k: ``top_k`` of annotation (reference: 10; None: not sent).
        annotate_best_of: ``best_of`` of annotation: the server samples this many and
            returns the ``annotate_n`` most likely (reference: 20; None: not sent; only
            with ``annotate_n_in_one_request``).
        sampling_extensions: send ``top_k`` and ``best_of`` (vLLM's and SGLang's
            extensions to the OpenAI API): ``"auto"`` sends them except to OpenAI's own
            API (``api.openai.com``, ``*.openai.azure.com``), which refuses unknown
            parameters; true always; false never.
        annotate_n_in_one_request: ask for ``n`` choices in one request; false -> parallel
            requests with distinct ``sample_index`` and ``seed`` (for servers without ``n``).
        min_frequency: reject an input whose top output is below this share of the
            surviving samples (reference pipelines: 0.3).
        min_votes: reject an input whose top output was produced fewer times than this
            (reference: 1, so a lone surviving sample wins 1/1; kept rows flag it with
            ``single_vote``; 2 rejects such votes, filter ``min_votes``).
        balance_classes: write ``balanced.jsonl`` in classification mode.
        concurrency: calls in flight during the generation rounds (None: ``per_round``).
        templates: prompt overrides.
        semantic_dedup: embedding near-duplicate filter on generated inputs (off by default).
        task: the task to run when ``run.input`` lists several (the reference's
            ``tasks.json``): its ``task_name``.
        task_type: override the task file's (or the inferred) type.
        labels: override the task file's (or the inferred) labels (classification).
    """

    task: str | None = None
    task_type: TaskType | None = None
    labels: tuple[str, ...] | None = None
    role: Literal["strong", "target", "judge"] = "target"
    generation_rounds: Annotated[int, msgspec.Meta(ge=1)] = 10
    per_round: Annotated[int, msgspec.Meta(ge=1)] = 10
    generation_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    generation_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 500
    generation_top_k: Annotated[int, msgspec.Meta(ge=1)] | None = 40
    max_low_quality: Annotated[int, msgspec.Meta(ge=0)] = 10
    context_tokens: Annotated[int, msgspec.Meta(ge=1)] = 3000
    prompt_rebuilds: Annotated[int, msgspec.Meta(ge=0)] = 10
    input_length_filter: bool | None = None
    output_length_filter: bool | None = None
    length_sd: Annotated[float, msgspec.Meta(gt=0)] = 2.0
    noise_filter: bool = True
    default_noise_phrases: bool = True
    noise_phrases: tuple[str, ...] = ()
    dedup_examples: bool = True
    annotate_n: Annotated[int, msgspec.Meta(ge=1)] = 10
    annotate_temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] = 0.2
    annotate_max_tokens: Annotated[int, msgspec.Meta(ge=1)] = 500
    annotate_top_k: Annotated[int, msgspec.Meta(ge=1)] | None = 10
    annotate_best_of: Annotated[int, msgspec.Meta(ge=1)] | None = 20
    sampling_extensions: bool | Literal["auto"] = "auto"
    annotate_n_in_one_request: bool = True
    min_frequency: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.3
    min_votes: Annotated[int, msgspec.Meta(ge=1)] = 1
    balance_classes: bool = True
    concurrency: Annotated[int, msgspec.Meta(ge=1)] | None = None
    templates: SelfGuideTemplates = msgspec.field(default_factory=SelfGuideTemplates)
    semantic_dedup: SemanticDedupConfig = msgspec.field(default_factory=SemanticDedupConfig)


# ------------------------------------------------------------------ checks
def _where(config: RunConfig, key: str) -> tuple[str | None, int | None]:
    """The file (or ``--set``) and line of ``key`` for an error."""
    if key in config.overridden:
        return "--set", None
    if not config.source:
        return None, None
    try:
        text = Path(config.source).read_text(encoding="utf-8")
    except OSError:
        return config.source, None
    return config.source, locate_key(text, key)


def check_options(cfg: SelfGuideConfig, config: RunConfig) -> None:
    """What the Struct cannot check: template variables, ``best_of`` against ``n``, and
    the ``dedup`` extra when semantic dedup is on.

    Raises:
        ConfigError: with the file, line and key of the offending option.
    """
    try:
        check_templates(cfg.templates, P.TEMPLATE_VARS, prefix=f"{FIELD}.templates")
    except ConfigError as exc:
        path, line = _where(config, exc.field or f"{FIELD}.templates")
        raise ConfigError(
            exc.reason, path=path, line=line, field=exc.field, hint=exc.hint
        ) from None
    if (
        cfg.annotate_best_of is not None
        and cfg.annotate_n_in_one_request
        and cfg.annotate_best_of < cfg.annotate_n
    ):
        key = f"{FIELD}.annotate_best_of"
        path, line = _where(config, key)
        raise ConfigError(
            f"annotate_best_of = {cfg.annotate_best_of} is below annotate_n = {cfg.annotate_n}",
            path=path,
            line=line,
            field=key,
            hint="best_of is how many samples the server draws to return the n best: "
            "set it to at least annotate_n, or leave it out",
        )
    if cfg.semantic_dedup.enabled:
        require_extra(config, f"{FIELD}.semantic_dedup", default_model=not cfg.semantic_dedup.model)


# ---------------------------------------------------------------- settings
class Settings(TypedDict):
    """The per-task-type settings in effect (``report.json`` → ``settings``)."""

    generation_temperature: float
    input_length_filter: bool
    output_length_filter: bool


def settings_for(cfg: SelfGuideConfig, task_type: TaskType) -> Settings:
    """The options left at None resolved for ``task_type`` (the reference pipelines')."""
    cls = task_type == "classification"
    return {
        "generation_temperature": (
            cfg.generation_temperature
            if cfg.generation_temperature is not None
            else (0.7 if cls else 0.9)
        ),
        "input_length_filter": (
            cfg.input_length_filter if cfg.input_length_filter is not None else cls
        ),
        "output_length_filter": (
            cfg.output_length_filter if cfg.output_length_filter is not None else not cls
        ),
    }


# --------------------------------------------------------- sampling extensions
class Sampling(TypedDict):
    """The sampling extensions sent (None: not sent; ``report.json`` → ``sampling``)."""

    generation_top_k: int | None
    annotate_top_k: int | None
    annotate_best_of: int | None


_OPENAI_HOSTS = ("api.openai.com", ".openai.azure.com")


def refuses_extensions(base_url: str) -> bool:
    """Whether ``base_url`` is OpenAI's own API, which refuses ``top_k`` and ``best_of``."""
    host = urlsplit(base_url).hostname or ""
    return host == _OPENAI_HOSTS[0] or host.endswith(_OPENAI_HOSTS[1])


def sends_extensions(cfg: SelfGuideConfig, config: RunConfig) -> tuple[bool, str | None]:
    """Whether ``top_k``/``best_of`` are sent (``sampling_extensions``), and the warning
    to give when ``"auto"`` leaves them out."""
    mode = cfg.sampling_extensions
    if mode != "auto":
        return bool(mode), None
    if config.roles is None:
        return True, None
    urls = [
        config.endpoints[name].base_url
        for name in config.role_endpoints(cfg.role)
        if name in config.endpoints
    ]
    refused = [u for u in urls if refuses_extensions(u)]
    if refused:
        return False, (
            f"top_k and best_of are not sent: {refused[0]} is OpenAI's API, which refuses "
            "parameters it does not define (the reference's top_k=40/10 and best_of=20 need "
            "a vLLM or SGLang server; sampling_extensions = true sends them anyway)"
        )
    return True, None


def sampling_for(cfg: SelfGuideConfig, *, extensions: bool) -> Sampling:
    """The ``top_k``/``best_of`` values to send (None: not sent)."""
    return {
        "generation_top_k": cfg.generation_top_k if extensions else None,
        "annotate_top_k": cfg.annotate_top_k if extensions else None,
        "annotate_best_of": (
            cfg.annotate_best_of if extensions and cfg.annotate_n_in_one_request else None
        ),
    }
