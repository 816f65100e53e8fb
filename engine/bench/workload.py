"""What each request asks for: synthetic prompts, a prompt dataset, or a trace's lengths.

:class:`Workload` turns the settings into :class:`Plan` objects, one per conversation
(a single-turn request is a conversation of one turn), made on demand by index and a
seed, so a run of any length holds no more than the conversations in flight and the same
settings always send the same requests.

* **Synthetic** (default): ``--prompt-tokens`` and ``--output-tokens`` length
  distributions; ``--turns N`` makes conversations of N user turns, each turn sent with
  the previous turns and the server's replies.
* **Dataset** (``--dataset``): records in a shuffled order (by ``--seed``), cycled if the
  run asks for more; output length from ``--output-tokens`` if given, else the record's
  reference reply, else 64. ``--turns`` caps the turns taken from each record
  (1 by default: the first user turn; 0: all of them).
* **Trace** (``--trace``): row *i* is request *i*, with the row's input and output length;
  Mooncake ``hash_ids`` become shared 512-token blocks of text (``--block-tokens``).
* **Shared prefixes** (``--prefix-tokens P --prefix-count K``): K fixed texts of P tokens;
  conversation *i* starts with prefix ``i mod K`` (prefix-cache experiments).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import msgspec

from .datasets import Conversation, TraceRow
from .lengths import LengthDist
from .tokens import TokenCounter, WordTokens

__all__ = ("Plan", "Workload")

DEFAULT_OUTPUT_TOKENS = 64
_M64 = (1 << 64) - 1
_POOL = 1 << 16


def _mix(x: int) -> int:
    """splitmix64: a cheap, well-spread hash of an integer (per-request randomness)."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """One conversation to send.

    Attributes:
        index: its position in the run (0-based).
        turns: ``(user text, max_tokens)`` per request, in order.
        system: a system message sent first, if any.
        history: ``(role, text)`` messages sent before the first turn.
        source: where it came from (``synthetic``, ``file:line``, ``trace:N``).
    """

    index: int
    turns: tuple[tuple[str, int], ...]
    system: str | None = None
    history: tuple[tuple[str, str], ...] = ()
    source: str = "synthetic"


class Workload:
    """Makes the run's conversations (see the module docstring).

    Args:
        tokens: token counter used to make and measure text.
        prompt_tokens: prompt length distribution (synthetic prompts).
        output_tokens: output length distribution, or None to take it from the dataset.
        seed: the run's seed.
        turns: turns per conversation (synthetic: exactly; dataset: at most, 0 = all).
        conversations: a prompt dataset, if any.
        trace: a trace's rows, if any.
        prefix_tokens: length of the shared prefixes (0: none).
        prefix_count: number of distinct shared prefixes.
        block_tokens: tokens per trace hash block.
    """

    def __init__(
        self,
        tokens: TokenCounter,
        *,
        prompt_tokens: LengthDist,
        output_tokens: LengthDist | None,
        seed: int = 0,
        turns: int = 1,
        conversations: Sequence[Conversation] = (),
        trace: Sequence[TraceRow] = (),
        prefix_tokens: int = 0,
        prefix_count: int = 1,
        block_tokens: int = 512,
    ) -> None:
        self.tokens = tokens
        self.prompt_tokens = prompt_tokens
        self.output_tokens = output_tokens
        self.seed = seed
        self.turns = turns
        self.conversations = list(conversations)
        random.Random(seed).shuffle(self.conversations)
        self.trace = list(trace)
        self.block_tokens = block_tokens
        rng = random.Random(f"{seed}/prefix")
        self.prefixes = [
            tokens.text(rng, prefix_tokens)
            for _ in range(max(1, prefix_count) if prefix_tokens else 0)
        ]
        self._blocks: dict[int, str] = {}
        # Synthetic text without a tokenizer is cut from one pool of random words at a
        # per-request offset: seeding a random.Random per request cost more CPU than the
        # rest of sending it (16 us of ~300 us per request at 256 in flight).
        self._key = _mix(seed)
        self._fast = isinstance(tokens, WordTokens)
        pool_rng = random.Random(f"{seed}/pool")
        self._pool = tokens.text(pool_rng, _POOL).split(" ") if self._fast else []

    @property
    def kind(self) -> str:
        """``"trace"``, ``"dataset"`` or ``"synthetic"``."""
        return "trace" if self.trace else "dataset" if self.conversations else "synthetic"

    def _prefixed(self, index: int, text: str) -> str:
        if not self.prefixes:
            return text
        return self.prefixes[index % len(self.prefixes)] + "\n" + text

    def _block(self, block_id: int) -> str:
        text = self._blocks.get(block_id)
        if text is None:
            text = self.tokens.text(
                random.Random(f"{self.seed}/block/{block_id}"), self.block_tokens
            )
            self._blocks[block_id] = text
        return text

    def _u(self, index: int, k: int) -> float:
        """The k-th uniform draw in [0, 1) of request ``index``."""
        return (_mix(self._key ^ _mix(index * 1024 + k)) >> 11) / float(1 << 53)

    def _text(self, index: int, k: int, tokens: int) -> str:
        """Synthetic text of ``tokens`` tokens, the k-th piece of request ``index``."""
        if not self._fast:
            rng = random.Random(f"{self.seed}/{index}/{k}")
            return self.tokens.text(rng, tokens)
        pool = self._pool
        start = _mix(self._key ^ _mix(index * 1024 + k + 512)) % _POOL
        if start + tokens <= _POOL:
            return " ".join(pool[start : start + tokens])
        words = pool[start:]
        while len(words) < tokens:
            words += pool
        return " ".join(words[:tokens])

    def _out(self, index: int, k: int, reference: int | None) -> int:
        dist = self.output_tokens
        if dist is not None:
            return dist.low if dist.kind == "fixed" else dist.quantile(self._u(index, 2 * k + 1))
        return max(1, reference) if reference else DEFAULT_OUTPUT_TOKENS

    def plan(self, index: int) -> Plan:
        """The conversation at ``index`` (deterministic for the settings and seed)."""
        if self.trace:
            row = self.trace[index % len(self.trace)]
            if row.hash_ids:
                text = " ".join(self._block(b) for b in row.hash_ids)
                # the last block is partial: cut the text to the row's length
                text = self._fit(text, row.input_tokens, index)
            else:
                text = self._prefixed(index, self._text(index, 0, row.input_tokens))
            return Plan(
                index=index, turns=((text, row.output_tokens),), source=f"trace:{index + 1}"
            )
        if self.conversations:
            conv = self.conversations[index % len(self.conversations)]
            take = conv.turns if self.turns == 0 else conv.turns[: self.turns]
            turns = tuple(
                (self._prefixed(index, t.content) if k == 0 else t.content,
                 conv.max_tokens if conv.max_tokens and self.output_tokens is None
                 else self._out(index, k, t.reply_tokens))
                for k, t in enumerate(take)
            )  # fmt: skip
            return Plan(
                index=index,
                turns=turns,
                system=conv.system,
                history=conv.history,
                source=conv.source,
            )
        made: list[tuple[str, int]] = []
        fixed = self.prompt_tokens.kind == "fixed"
        for k in range(max(1, self.turns)):
            length = (
                self.prompt_tokens.low
                if fixed
                else self.prompt_tokens.quantile(self._u(index, 2 * k))
            )
            text = self._text(index, k, length)
            made.append(
                (self._prefixed(index, text) if k == 0 else text, self._out(index, k, None))
            )
        return Plan(index=index, turns=tuple(made))

    def _fit(self, text: str, tokens: int, index: int) -> str:
        words = text.split(" ")
        if self.tokens.name == "words":
            if len(words) >= tokens:
                return " ".join(words[:tokens])
            return text + " " + self._text(index, 1, tokens - len(words))
        have = self.tokens.count(text)
        if have < tokens:
            return text + " " + self._text(index, 1, tokens - have)
        # cut by words until the count fits (tokenizers merge across spaces rarely)
        keep = max(1, len(words) * tokens // max(1, have))
        out = " ".join(words[:keep])
        while keep > 1 and self.tokens.count(out) > tokens:
            keep -= 1
            out = " ".join(words[:keep])
        return out
