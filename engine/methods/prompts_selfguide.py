"""SELF-GUIDE prompts (paraphrased from the reference code's templates; spec: shared
methods.md section 3 (d)). ``{{name}}`` placeholders are filled by ``engine.stages.render``.
"""

from __future__ import annotations

__all__ = ("ANNOTATE_SYSTEM", "GENERATE", "GENERATE_CONDITIONAL", "RULE")

RULE = "-" * 40

GENERATE = f"""You are an InputGenerator. Your task is to write one new [input] for the \
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
Follow the [instruction] and the format of the high-quality examples. Reply with only the \
new [input], nothing else.
[input]="""

GENERATE_CONDITIONAL = f"""You are an InputGenerator. Your task is to write one new \
[input] for the task described by the [instruction] below. The new [input] must differ \
from the examples and be diverse, detailed, precise, comprehensive and of high quality.
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
Follow the [instruction] and the format of the high-quality examples. The expected \
[output] for the new [input] should be {{{{label}}}}. Reply with only the new [input], \
nothing else.
[input]="""

ANNOTATE_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions. "
    "The assistant gives concise answers."
)
