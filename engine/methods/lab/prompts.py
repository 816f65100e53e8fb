"""LAB (InstructLab SDG) prompt templates, in our own words.

Each template follows the SDG config structure: an introduction, principles, examples and
the generation request, concatenated into one user message (``{{var}}`` placeholders), with
:data:`SYSTEM` as the system message. Judges answer with an explanation block then a score
block (``[Start of Evaluation]``/``[End of Evaluation]``, ``[Start of Score]``/``[End of
Score]``). Every template is overridable from ``[method.lab.templates]``.
"""

from __future__ import annotations

__all__ = (
    "EVAL_FAITHFULNESS",
    "EVAL_PAIR",
    "EVAL_QUESTION",
    "EVAL_RELEVANCY",
    "EVAL_VERIFY_QUESTION",
    "GEN_CONTEXTS",
    "GEN_GROUNDED_QUESTIONS",
    "GEN_KNOWLEDGE",
    "GEN_QUESTIONS",
    "GEN_RESPONSES",
    "SIMPLE_KNOWLEDGE",
    "SIMPLE_SKILL",
    "SPELLCHECK",
    "SYSTEM",
    "TEMPLATE_VARS",
)

SYSTEM = "You are a careful assistant that writes and reviews training data for a language model."

_SKILL = {"task_description", "seed_question", "seed_answer", "seed_context"}

GEN_QUESTIONS = """\
You are asked to come up with a set of {{num_samples}} diverse questions for the following task.

Task: {{task_description}}

Principles:
1. Every question must fit the task and be answerable by a language model in text alone.
2. Questions must be in English, clear and human-like, safe, and factually sound.
3. The questions must be diverse and cover a wide range of topics; not template-based,
   and not copies of the example's wording.
4. Return the questions only, no answers or explanations.

Example question:
[Start of Question]
{{seed_question}}
[End of Question]

Now write {{num_samples}} such questions, each between [Start of Question] and
[End of Question].
"""

GEN_CONTEXTS = """\
You are asked to write one new context (a passage of text) for the following task.

Task: {{task_description}}

Principles:
1. The context must be the kind of text the task works on, self-contained and realistic.
2. It must be in English, at most a few paragraphs, and safe.
3. It must be new: different subject and details from the example.

Example context:
[Start of Context]
{{seed_context}}
[End of Context]

Write one new context between [Start of Context] and [End of Context] and nothing else.
"""

GEN_GROUNDED_QUESTIONS = """\
You are asked to come up with a set of {{num_samples}} diverse questions about a context,
for the following task.

Task: {{task_description}}

Principles:
1. Every question must be answerable from the context alone and address the task.
2. Questions must be in English, clear and human-like, safe, and diverse.
3. Return the questions only, no contexts or answers.

Example:
[Start of Context]
{{seed_context}}
[End of Context]
[Start of Question]
{{seed_question}}
[End of Question]

Now write {{num_samples}} such questions about this context, each between
[Start of Question] and [End of Question]:
[Start of Context]
{{context}}
[End of Context]
"""

EVAL_QUESTION = """\
Please act as an impartial judge of a question written for the following task.

Task: {{task_description}}

{{context_block}}Question:
[Start of Question]
{{question}}
[End of Question]

Principles: give 1 if the question is answerable in text, in English, one or two sentences,
safe and relevant to the task (and to the context, when there is one); otherwise give 0.

First explain your judgement between [Start of Evaluation] and [End of Evaluation], then give
the score (0 or 1) between [Start of Score] and [End of Score].
"""

GEN_RESPONSES = """\
You are asked to answer a question for the following task.

Task: {{task_description}}

Principles: answer accurately, helpfully and safely, in the style of the example.

Example question:
{{seed_question}}
Example answer:
{{seed_answer}}

{{context_block}}Question:
{{question}}

Write only the answer.
"""

EVAL_PAIR = """\
Please act as an impartial judge of an answer to a question for the following task.

Task: {{task_description}}

{{context_block}}Question:
[Start of Question]
{{question}}
[End of Question]
Answer:
[Start of Answer]
{{answer}}
[End of Answer]

Scale: 1 = wrong, unhelpful or unsafe; 2 = correct but brief or missing detail;
3 = correct, complete and well written.

First explain your judgement between [Start of Evaluation] and [End of Evaluation], then give
the score (1, 2 or 3) between [Start of Score] and [End of Score].
"""

SPELLCHECK = """\
Correct the spelling and obvious typos in the following document. Keep its wording, order
and Markdown formatting otherwise unchanged. Reply with the corrected document only.

[Start of Document]
{{document}}
[End of Document]
"""

GEN_KNOWLEDGE = """\
You are asked to write question and answer pairs about a document in the domain of {{domain}}.

Principles:
1. Every question must be answerable from the document alone, and every answer must be
   supported by it.
2. Cover different facts; do not repeat questions.
3. If the document holds nothing to ask about, reply [UNANSWERABLE] only.

Example document ({{document_outline}}):
{{icl_document}}

Example pairs:
{{icl_pairs}}

Document:
{{document}}

Write the pairs as [QUESTION] question [ANSWER] answer [END], one block per pair.
"""

EVAL_FAITHFULNESS = """\
Please act as an impartial judge: is the answer fully supported by the document?

Document:
[Start of Document]
{{document}}
[End of Document]
Question: {{question}}
Answer: {{answer}}

First explain your judgement between [Start of Evaluation] and [End of Evaluation], then give
YES (supported) or NO between [Start of Score] and [End of Score].
"""

EVAL_RELEVANCY = """\
Please act as an impartial judge of how well an answer addresses its question.

Question: {{question}}
Answer: {{answer}}

Give two sub-scores, each 0 or 1: subject (does the answer stay on the question's subject?)
and focus (does it answer what was asked, without digressing?). The total is their sum.

First explain your judgement between [Start of Evaluation] and [End of Evaluation], then give
"Total Score: X" (0, 1 or 2) between [Start of Score] and [End of Score].
"""

EVAL_VERIFY_QUESTION = """\
Please act as an impartial judge of whether a question is self-contained.

Question: {{question}}

Give 1 if the question is clear and can be understood without seeing any document
(it does not refer to "the document", "the text" or "the passage"); otherwise give 0.

First explain your judgement between [Start of Evaluation] and [End of Evaluation], then give
the score (0 or 1) between [Start of Score] and [End of Score].
"""

SIMPLE_SKILL = """\
You are asked to write one new question and its answer for the following task.

Task: {{task_description}}

Principles: the question must fit the task and differ from the example; the answer must be
accurate, helpful and safe.

Example:
[QUESTION] {{seed_question}} [ANSWER] {{seed_answer}} [END]

{{context_block}}Write one pair as [QUESTION] question [ANSWER] answer [END].
"""

SIMPLE_KNOWLEDGE = """\
You are asked to write one question and answer pair about a document in the domain of
{{domain}}; the answer must be supported by the document.

Example:
{{icl_pairs}}

Document:
{{document}}

Write one pair as [QUESTION] question [ANSWER] answer [END].
"""

TEMPLATE_VARS: dict[str, set[str]] = {
    "gen_questions": _SKILL | {"context_block", "num_samples"},
    "gen_contexts": _SKILL | {"context_block"},
    "gen_grounded_questions": _SKILL | {"context", "context_block", "num_samples"},
    "eval_question": _SKILL | {"question", "context", "context_block"},
    "gen_responses": _SKILL | {"question", "context", "context_block"},
    "eval_pair": _SKILL | {"question", "answer", "context", "context_block"},
    "spellcheck": {"document", "domain"},
    "gen_knowledge": {"domain", "document_outline", "icl_document", "icl_pairs", "document"},
    "eval_faithfulness": {"document", "question", "answer", "domain"},
    "eval_relevancy": {"document", "question", "answer", "domain"},
    "eval_verify_question": {"document", "question", "answer", "domain"},
    "simple_skill": _SKILL | {"context", "context_block"},
    "simple_knowledge": {"domain", "document_outline", "icl_document", "icl_pairs", "document"},
}
"""Template name -> the variables it may use."""
