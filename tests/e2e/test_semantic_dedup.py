"""End to end: LAB with semantic dedup through the CLI, stopped midway and resumed.

The simulated endpoint writes word salad that is almost never a near duplicate (300 of its
sentences: max cosine 0.894, 2 pairs above the 0.89 default), so this test serves its own
small OpenAI-compatible endpoint on 127.0.0.1 that answers each leaf's generations from a
fixed list holding near duplicates (within a leaf and across leaves) and paraphrases.
The run loads the shipped all-MiniLM-L6-v2 with the Hugging Face hub set offline.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.dedup.semantic import DEFAULT_THRESHOLD
from tests.conftest import ROOT

pytest.importorskip("sentence_transformers", reason="needs the dedup extra")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# Groups of near duplicates: at most one member of each may be kept.
GROUPS = [
    {
        "Write a short poem about the ocean at night.",
        "Write a short poem about the ocean at night!",
        "Write a short poem about the sea at night.",
    },
    {
        "Explain how a hash table handles collisions.",
        "Explain how a hash table handles collisions?",
    },
    {
        "List five tips for improving sleep quality.",
        "List five tips for improving your sleep quality.",
    },
]
LEAVES = {
    # Leaf "alpha" (processed first): two near-duplicate pairs and a paraphrase.
    "alpha": [
        "Write a short poem about the ocean at night.",
        "Write a short poem about the ocean at night!",
        "Explain how a hash table handles collisions.",
        "When two keys map to the same bucket in a hash map, what happens?",
        "List five tips for improving sleep quality.",
        "List five tips for improving your sleep quality.",
    ],
    # Leaf "beta": two near duplicates of alpha's questions, a paraphrase pair, two others.
    "beta": [
        "Write a short poem about the sea at night.",
        "Summarize the main causes of the French Revolution.",
        "Why did the revolution break out in France in 1789? Give the key reasons briefly.",
        "Explain how a hash table handles collisions?",
        "Describe the water cycle for a 10-year-old.",
        "Create a weekly workout plan for a beginner.",
    ],
}
PER_LEAF = 6


class FakeTeacher:
    """Answers LAB's simple-pipeline generations: each leaf's questions, one per request."""

    def __init__(self) -> None:
        self.served = dict.fromkeys(LEAVES, 0)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = "\n".join(str(m.get("content", "")) for m in body["messages"])
        leaf = next(name for name in LEAVES if f"{name} tasks" in prompt)
        i = self.served[leaf] % len(LEAVES[leaf])
        self.served[leaf] += 1
        text = f"[QUESTION] {LEAVES[leaf][i]} [ANSWER] An answer. [END]"
        return web.json_response(
            {
                "id": f"fake-{leaf}-{i}",
                "object": "chat.completion",
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
        )


@pytest.fixture
async def teacher_url() -> AsyncIterator[str]:
    fake = FakeTeacher()
    app = web.Application()
    app.router.add_get("/v1/models", fake.models)
    app.router.add_post("/v1/chat/completions", fake.chat)
    async with TestServer(app, host="127.0.0.1", port=0) as server:
        yield str(server.make_url("/v1"))


def _write_job(tmp: Path, url: str) -> Path:
    for name in LEAVES:
        leaf = tmp / "taxonomy" / "compositional_skills" / name
        leaf.mkdir(parents=True)
        seeds = "\n".join(
            f"  - question: Example {name} question {k}?\n    answer: Example answer {k}."
            for k in range(5)  # InstructLab v3 needs >= 5 seeds
        )
        (leaf / "qna.yaml").write_text(
            f"version: 3\ncreated_by: test\ntask_description: Write {name} tasks.\n"
            f"seed_examples:\n{seeds}\n"
        )
    config = tmp / "job.toml"
    config.write_text(
        f"""
[run]
method = "lab"
input = "taxonomy"
output = "out"
max_items_in_flight = 1   # leaf alpha, then leaf beta

[endpoints.teacher]
base_url = "{url}"
model = "fake"
structured_output = false
max_concurrency = 8

[roles]
strong = "teacher"
judge = "teacher"

[budget]
max_requests = {PER_LEAF}   # stops after leaf alpha; raised on the rerun

[method.lab]
pipeline = "simple"
num_instructions_to_generate = {PER_LEAF}

[method.lab.semantic_dedup]
enabled = true
"""
    )
    return config


async def _cli(*args: str, limit_s: float = 100.0) -> tuple[int, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(limit_s):
            _, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def _rows(out: Path, kind: str) -> list[dict[str, Any]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows: list[dict[str, Any]] = []
    for shard in manifest["shards"]:
        if shard["kind"] == kind:
            rows.extend(json.loads(line) for line in (out / shard["name"]).read_text().splitlines())
    return rows


def _report(out: Path) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((out / "report.json").read_text())["method_report"]
    return report


def _group(text: str) -> int | None:
    return next((g for g, members in enumerate(GROUPS) if text in members), None)


async def test_lab_drops_near_duplicates_and_resumes_against_committed_rows(
    tmp_path: Path, teacher_url: str
) -> None:
    config = _write_job(tmp_path, teacher_url)
    out = tmp_path / "out"

    # Run 1: leaf alpha only (the budget stops the run before leaf beta; exit 3).
    code, err = await _cli("run", str(config), "--quiet")
    assert code == 3, err
    first = _report(out)
    dups = [r for r in _rows(out, "rejected") if r["filter"] == "near_duplicate"]
    assert len(dups) == 2
    assert first["dropped_by_filter"]["near_duplicate"] == 2
    assert first["semantic_dedup"]["dropped"] == 2
    assert first["semantic_dedup"]["rebuilt_from_output"] == 0
    assert len(_rows(out, "kept")) == 4

    # Run 2 resumes with leaf beta: its near duplicates of alpha's committed questions
    # are found through the index rebuilt from the committed rows.
    code, err = await _cli("run", str(config), "--quiet", "--set", "budget.max_requests=100")
    assert code == 0, err
    second = _report(out)
    assert second["semantic_dedup"]["rebuilt_from_output"] == 4  # alpha's kept questions
    # ... from the embeddings run 1 stored beside its shards, not by embedding them again.
    assert second["semantic_dedup"]["rebuilt_from_stored_embeddings"] == 4
    assert first["semantic_dedup"]["rebuilt_from_stored_embeddings"] == 0
    assert second["semantic_dedup"]["dropped"] == 2
    assert second["dropped_by_filter"]["near_duplicate"] == 2
    assert second["per_leaf"]["compositional_skills/beta"]["dropped"]["near_duplicate"] == 2

    kept = _rows(out, "kept")
    rejected = _rows(out, "rejected")
    assert not _rows(out, "failed")
    dups = [r for r in rejected if r["filter"] == "near_duplicate"]
    assert len(dups) == 4 and len(kept) == 8 and len(rejected) == 4
    by_id = {r["id"]: r for r in kept}
    for row in dups:
        assert row["reason"] == "near_duplicate"
        assert row["similarity"] > DEFAULT_THRESHOLD
        original = by_id[row["duplicate_of"]]  # always a committed, kept row here
        assert _group(row["question"]) is not None
        assert _group(original["question"]) == _group(row["question"])
    # At most one kept question per group of near duplicates; paraphrases all kept.
    questions = [r["question"] for r in kept]
    for a, b in combinations(questions, 2):
        assert _group(a) is None or _group(a) != _group(b), (a, b)
    assert "When two keys map to the same bucket in a hash map, what happens?" in questions
    assert (
        "Why did the revolution break out in France in 1789? Give the key reasons briefly."
        in questions
    )
