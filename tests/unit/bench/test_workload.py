"""Workloads: lengths, shared prefixes, turns, datasets, traces; a real tokenizer."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.bench.datasets import read_prompts, read_trace
from engine.bench.lengths import parse_length
from engine.bench.tokens import HfTokens, WordTokens
from engine.bench.workload import Workload
from engine.errors import ConfigError

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "bench"


def _synthetic(**kw: object) -> Workload:
    args: dict[str, object] = {
        "prompt_tokens": parse_length("uniform:5,50"),
        "output_tokens": parse_length("normal:20,5"),
    }
    args.update(kw)
    return Workload(WordTokens(), **args)  # type: ignore[arg-type]


def test_synthetic_lengths_follow_the_distribution() -> None:
    w = _synthetic()
    plans = [w.plan(i) for i in range(400)]
    lengths = [len(p.turns[0][0].split()) for p in plans]
    assert min(lengths) == 5 and max(lengths) == 50
    assert len({p.turns[0][0] for p in plans}) == 400  # every prompt differs
    assert w.plan(7) == plans[7]  # made on demand, the same every time


def test_shared_prefixes() -> None:
    w = _synthetic(prefix_tokens=30, prefix_count=3)
    texts = [w.plan(i).turns[0][0] for i in range(9)]
    prefixes = [t.split("\n")[0] for t in texts]
    assert len(set(prefixes)) == 3 and prefixes[0] == prefixes[3] == prefixes[6]
    assert all(len(p.split()) == 30 for p in prefixes)


def test_multi_turn_synthetic() -> None:
    w = _synthetic(turns=3)
    p = w.plan(0)
    assert len(p.turns) == 3 and all(mt >= 1 for _, mt in p.turns)


def test_dataset_turns_and_output_lengths() -> None:
    convs, _ = read_prompts(FIX / "fastchat_dummy_conversation_first60.json", WordTokens())
    first = Workload(
        WordTokens(), prompt_tokens=parse_length(1), output_tokens=None, conversations=convs
    )
    every = Workload(
        WordTokens(),
        prompt_tokens=parse_length(1),
        output_tokens=None,
        conversations=convs,
        turns=0,
    )
    forced = Workload(
        WordTokens(),
        prompt_tokens=parse_length(1),
        output_tokens=parse_length(7),
        conversations=convs,
    )
    assert all(len(first.plan(i).turns) == 1 for i in range(60))
    assert max(len(every.plan(i).turns) for i in range(60)) == 3
    source = {c.source: c for c in convs}
    for i in range(60):
        plan = every.plan(i)
        conv = source[plan.source]
        assert [mt for _, mt in plan.turns] == [t.reply_tokens for t in conv.turns]
        assert forced.plan(i).turns[0][1] == 7
    assert {first.plan(i).source for i in range(60)} == set(source)  # a shuffled cycle


def test_trace_hash_blocks_share_text() -> None:
    rows = read_trace(FIX / "mooncake_conversation_trace_head200.jsonl")
    w = Workload(
        WordTokens(), prompt_tokens=parse_length(1), output_tokens=None, trace=rows, block_tokens=16
    )
    a, b = w.plan(0), w.plan(1)
    # rows 0 and 1 share hash block 0: their prompts share its 16 tokens
    assert a.turns[0][0].split()[:16] == b.turns[0][0].split()[:16]
    assert a.turns[0][0].split()[16:32] != b.turns[0][0].split()[16:32]
    for i, row in enumerate(rows[:20]):
        text, max_tokens = w.plan(i).turns[0]
        assert max_tokens == row.output_tokens
        assert len(text.split()) == row.input_tokens


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BPE tokenizer trained here from the fixture conversations (offline)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    text = (FIX / "fastchat_dummy_conversation_first60.json").read_text()
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]"], show_progress=False)
    tok.train_from_iterator([text] * 3, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_tokenizer_gives_exact_prompt_lengths(tokenizer_file: Path) -> None:
    tokens = HfTokens(tokenizer_file)
    rng = random.Random(0)
    for n in (1, 7, 64, 300):
        assert tokens.count(tokens.text(rng, n)) == n
    w = Workload(tokens, prompt_tokens=parse_length("uniform:10,40"), output_tokens=parse_length(5))
    for i in range(20):
        text = w.plan(i).turns[0][0]
        assert 10 <= tokens.count(text) <= 40


def test_tokenizer_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--tokenizer"):
        HfTokens(tmp_path / "nope.json")
