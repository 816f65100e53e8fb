"""CodecLM prompt templates, paraphrasing the structure of the paper's App. A.9 (Figs. 7-11).

Each keeps the paper's role, rules, fields and output format; the wording is ours.
Placeholders are ``{{name}}``. Every template can be replaced from the config
(``[method.codeclm.templates]``).
"""

from __future__ import annotations

__all__ = (
    "CHECK_METADATA",
    "DECODE",
    "ENCODE",
    "IMPROVE",
    "JUDGE",
    "RESPOND",
    "RUBRICS",
    "TEMPLATE_VARS",
)

ENCODE = """You are an instruction analyzer. Read the instruction below and name its use case and the skills a model needs to answer it well.

Rules:
- Give at most 3 skills. Each skill is 2 to 3 words and should transfer to other instructions.
- Do not use the words "skill" or "knowledge".
- Give no explanation.

Example 1
Instruction: Write a short poem about autumn leaves for a children's book.
Use case: Children's poetry writing
Skills: Creative writing, Rhyme construction, Age-appropriate language

Example 2
Instruction: Why does my Python loop print the same value three times? for i in range(3): print(x)
Use case: Code debugging
Skills: Python programming, Error diagnosis

Example 3
Instruction: Give me a packing list for a week of hiking in the Alps in September.
Use case: Travel planning
Skills: Outdoor preparation, List organization, Weather awareness

Now the instruction to analyze.
Instruction: {{instruction}}
Answer with exactly two lines:
Use case: <use case>
Skills: <comma-separated skills>"""

DECODE = """You are an instruction writer. Write {{n}} instructions that fit the use case and call for the skills below.

Use case: {{use_case}}
Skills: {{skills}}

Rules:
- Each instruction must be reasonable, self-contained and answerable by a human.
- Make the instructions diverse: vary the topic, the form and the length.
- Do not write answers.
Write the instructions as numbered bullet points (1., 2., ...), one per line."""

RUBRICS = """You are an instruction judge with domain expertise. For the use case and skills below, write {{k}} domain-specific rubrics that tell how difficult and complex an instruction of this kind is. Then write {{k}} actions, one per rubric, each describing how to change an instruction so that it scores higher on that rubric (that is, becomes harder).

Use case: {{use_case}}
Skills: {{skills}}

Answer in this format:
Rubrics:
1. <rubric>
...
Actions:
1. <action>
..."""

IMPROVE = """You are an instruction improver. Rewrite the input instruction following the improving action, so that it becomes more difficult to answer.

Rules:
- The improved instruction must stay reasonable, self-consistent and answerable by a human.
- Do not copy words from the improving action.
- Reply with the improved instruction only.

Improving action: {{action}}
Input instruction: {{instruction}}
Improved instruction:"""

RESPOND = "{{instruction}}"

JUDGE = """[Question]
{{instruction}}

[The Start of Assistant 1's Answer]
{{answer_1}}
[The End of Assistant 1's Answer]

[The Start of Assistant 2's Answer]
{{answer_2}}
[The End of Assistant 2's Answer]

[System]
You are reviewing the two AI assistants' answers to the question above. Rate each answer for helpfulness, relevance, accuracy and level of detail, giving each an overall score from 1 to 10 (higher is better).
Output a single first line with exactly two numbers, the scores of Assistant 1 and Assistant 2, separated by a space. Give no explanation. Judge without bias: the order in which the answers appear must not influence your scores."""

CHECK_METADATA = """You are reviewing metadata that will be used to write instructions. Decide whether the use case and the skills below make a reasonable combination: could a realistic instruction of this use case call for all of these skills?

Use case: {{use_case}}
Skills: {{skills}}

Answer with YES or NO on the first line, then one sentence of reason."""
"""Our addition (off by default): the paper's authors removed unreasonable augmented
combinations by hand (App. A.3); ``metadata_check = true`` asks the judge instead."""

TEMPLATE_VARS: dict[str, set[str]] = {
    "check_metadata": {"use_case", "skills"},
    "encode": {"instruction"},
    "decode": {"n", "use_case", "skills"},
    "rubrics": {"k", "use_case", "skills"},
    "improve": {"action", "instruction"},
    "respond": {"instruction"},
    "judge": {"instruction", "answer_1", "answer_2"},
}
