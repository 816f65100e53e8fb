"""LAB's generation and judge steps: one :class:`~engine.stages.Generate` per SDG block.

Each step has its template (``[method.lab.templates]``), its reply shape (asked for as
structured output, parsed from SDG's tagged text otherwise), its sampling parameters and
its depth in the pipeline (deeper steps are served first at the gate, so leaves in
flight finish before new ones start).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ...stages import Generate, StageObserver
from . import parsing as p
from .config import LabConfig

__all__ = ("Steps",)

T = TypeVar("T")

Sampling = dict[str, float | int]


class Steps:
    """The steps of a run, built from ``[method.lab]`` and the run's stage observers.

    Args:
        cfg: the method's options.
        observer_for: stage name -> its metrics (``engine.Context.observer``).
    """

    def __init__(self, cfg: LabConfig, observer_for: Callable[[str], StageObserver]) -> None:
        t = cfg.templates
        self._system = t.system or None
        self._observer_for = observer_for
        gen: Sampling = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
        resp: Sampling = {
            "temperature": cfg.response_temperature,
            "max_tokens": cfg.response_max_tokens,
        }
        judge: Sampling = {"temperature": cfg.judge_temperature, "max_tokens": cfg.judge_max_tokens}
        s = self._step
        # Built in the order the stages are listed in the report.
        self.gen_questions = s(
            "gen_questions",
            t.gen_questions,
            0,
            p.Questions,
            p.tagged_questions("gen_questions"),
            gen,
            p.questions_schema(cfg.num_samples),
        )
        self.gen_contexts = s(
            "gen_contexts", t.gen_contexts, 0, p.Context, p.first_tagged("gen_contexts"), gen
        )
        self.gen_grounded_questions = s(
            "gen_grounded_questions",
            t.gen_grounded_questions,
            1,
            p.Questions,
            p.tagged_questions("gen_grounded_questions"),
            gen,
            p.questions_schema(cfg.grounded_questions),
        )
        self.eval_question = s(
            "eval_question",
            t.eval_question,
            2,
            p.Binary,
            lambda text: p.binary(text, "eval_question"),
            judge,
        )
        self.gen_responses = self._text("gen_responses", t.gen_responses, 3, resp)
        self.eval_pair = s("eval_pair", t.eval_pair, 4, p.PairScore, p.pair_score, judge)
        self.spellcheck = self._text("spellcheck", t.spellcheck, 0, resp)
        self.gen_knowledge = s("gen_knowledge", t.gen_knowledge, 1, p.QAList, p.qa_list, gen)
        self.eval_faithfulness = s(
            "eval_faithfulness", t.eval_faithfulness, 2, p.YesNo, p.yes_no, judge
        )
        self.eval_relevancy = s(
            "eval_relevancy", t.eval_relevancy, 3, p.Relevancy, p.relevancy, judge
        )
        self.eval_verify_question = s(
            "eval_verify_question",
            t.eval_verify_question,
            4,
            p.Binary,
            lambda text: p.binary(text, "eval_verify_question"),
            judge,
        )
        self.simple_skill = s(
            "simple_skill", t.simple_skill, 0, p.QAPair, p.first_qa("simple_skill"), gen
        )
        self.simple_knowledge = s(
            "simple_knowledge", t.simple_knowledge, 0, p.QAPair, p.first_qa("simple_knowledge"), gen
        )

    def _step(
        self,
        name: str,
        template: str,
        depth: int,
        schema: type[T],
        parse: Callable[[str], T],
        params: Sampling,
        wire: dict[str, object] | None = None,
    ) -> Generate[T]:
        return Generate(
            name,
            depth=depth,
            template=template,
            system=self._system,
            schema=schema,
            parse_text=parse,
            params=params,
            observer_for=self._observer_for,
            wire_schema=wire,
        )

    def _text(self, name: str, template: str, depth: int, params: Sampling) -> Generate[str]:
        """A step whose reply is free text (no schema): a response, a corrected chunk."""
        return Generate(
            name,
            depth=depth,
            template=template,
            system=self._system,
            schema=None,
            parse_text=p.nonempty(name),
            params=params,
            observer_for=self._observer_for,
        )
