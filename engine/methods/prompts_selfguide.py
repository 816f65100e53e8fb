"""SELF-GUIDE prompts (paraphrased from the reference code's templates; spec: shared
methods.md section 3 (d)). ``{{name}}`` placeholders are filled by ``engine.stages.render``.
"""

from __future__ import annotations

__all__ = ("ANNOTATE_SYSTEM", "GENERATE", "GENERATE_CONDITIONAL", "RULE", "TEMPLATE_VARS")

RULE = "-" * 40

# The two input-generation prompts differ only in the label sentence of the closing rule.
_GENERATE_BODY = f"""You are an InputGenerator. Your task is to write one new [input] for the \
task described by the [instruction] below. The new [input] must differ from the examples \
and be diverse, detailed, precise, comprehensive and of high quality.
{RULE}
[instruction]
{{{{instruction}}}}
{RULE}
High-quality [input] examples (they follow the strict format requirements):
{{{{high_quality}}}}
{RULE}
Low-quality [input] examples (their format may be inaccurate):
{{{{low_quality}}}}
{RULE}
Follow the [instruction] and the format of the high-quality examples. """
_GENERATE_END = """Reply with only the new [input], nothing else.
[input]="""

GENERATE = _GENERATE_BODY + _GENERATE_END

GENERATE_CONDITIONAL = (
    _GENERATE_BODY
    + "The expected [output] for the new [input] should be {{label}}. "
    + _GENERATE_END
)

ANNOTATE_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions. "
    "The assistant gives concise answers."
)

TEMPLATE_VARS: dict[str, set[str]] = {
    "generate": {"instruction", "high_quality", "low_quality"},
    "generate_conditional": {"instruction", "high_quality", "low_quality", "label"},
    "annotate_system": set(),
}
