"""Instruction backtranslation (Humpback) prompt templates.

They follow the structure of the paper's prompts (Li et al. 2023, section 3.1 and
Table 1): a backward prompt asking for the instruction a web text would answer, and the
self-curation prompt with its 5-point rubric, brief reasoning and a final
``Score: <rating>`` line. The wording is ours. Placeholders are ``{{name}}``; every
template can be replaced from the config (``[method.backtranslation.templates]``).
"""

from __future__ import annotations

__all__ = ("BACKTRANSLATE", "CURATE", "S_A", "S_W", "TEMPLATE_VARS")

S_A = "Answer in the style of an AI Assistant."
"""System-prompt tag of seed (human-written instruction) data [Hump section 2.3]."""

S_W = "Answer with knowledge from web search."
"""System-prompt tag of augmented (backtranslated web) data [Hump section 2.3]."""

BACKTRANSLATE = """Below is a candidate answer taken from a web page. Write the single most likely instruction or question a user could have asked for which this text would be a great answer.

Rules:
- Write only the instruction, as the user would type it, with no preamble and no quotes.
- The instruction must be self-contained: do not mention "the text", "the passage" or "the web page".

{{heading_block}}Candidate answer:
{{segment}}"""
"""The backward prompt: the segment alone, as the paper's backward model M_yx sees it
(``{{heading_block}}`` is empty unless ``backtranslate_header = true``, which adds
``Heading: <header>``)."""

CURATE = """Below is an instruction from a user and a candidate answer. Judge whether the answer is a good example of how an AI Assistant should respond to the user's instruction. Rate it on this 5-point scale:

1: The answer is incomplete, vague, off-topic, controversial, or not exactly what the user asked for: for example content is missing, the answer drifts from the question, or it is promotional text, navigation text or other irrelevant web content. It may also be written in a personal voice, like a forum or blog post.
2: The answer addresses most of what the user asked, but not directly: for example it gives only a high-level method instead of the exact solution, or only partly answers the question.
3: The answer is helpful and addresses every basic ask, and it is complete and self-contained, but it is written from another person's perspective rather than an AI Assistant's: it reads like an excerpt from a blog post, a web page or search results (for example it contains personal experience, opinions, mentions of comments or sharing links).
4: The answer is written from an AI Assistant's perspective and clearly focused on the instruction. It is complete, clear, well organised, self-contained and helpful, in a polite and engaging tone, with only minor room for improvement, such as being more concise or focused.
5: The answer is a perfect AI Assistant answer: focused on resolving the user's instruction, with no irrelevant sentences, complete and clear, written with expert knowledge in an engaging and insightful way, and well organised.

First give brief reasoning for your rating, then write "Score: <rating>" on the last line, where <rating> is 1, 2, 3, 4 or 5.

Instruction:
{{instruction}}

Answer:
{{answer}}"""

TEMPLATE_VARS: dict[str, frozenset[str]] = {
    "backtranslate": frozenset({"segment", "header", "heading_block"}),
    "curate": frozenset({"instruction", "answer"}),
}
"""Template name -> the placeholders it may use."""
