"""The batcher on its own, against a provider double that records what it is asked.

Checks the client side of docs/batch.md that the end-to-end runs cannot aim at: a stage
split at ``max_requests`` / ``max_bytes`` (and at the provider's own cap), the poll
backoff, ``retry_with = "online"``, Ctrl+C (``drain``) leaving batches running or, with
``cancel_on_stop``, cancelling them, and a crash between the ledger's record and the
provider's answer recovered by token (OpenAI) or counted as ``resubmitted_unknown``
(Anthropic, whose batches cannot be found again).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from engine.errors import Draining, ServerError
from engine.llm.batch import Batcher, BatchLedger, BatchSettings, OnlineRetry
from engine.llm.batch_api import BatchLine, BatchRequest, BatchState
from engine.llm.cache import ResponseCache
from engine.llm.client import ChatResult
from engine.llm.wire import Usage


class FakeProvider:
    """A batch API double: batches end after ``polls_to_end`` polls; every request is
    answered ``"reply to <content>"`` unless its content is in ``not_run`` (then the
    batch says it was not run, once)."""

    def __init__(self, *, keeps_tokens: bool = True, max_requests: int = 50_000) -> None:
        self.max_requests = max_requests
        self.max_bytes = 200 * 1024 * 1024
        self.keeps_tokens = keeps_tokens
        self.finds_batches = keeps_tokens
        self.polls_to_end = 1
        self.not_run: set[str] = set()
        self.batches: dict[str, list[BatchRequest]] = {}
        self.tokens: dict[str, str] = {}
        self.polls: dict[str, int] = {}
        self.cancelled: list[str] = []
        self.submit_hook: Callable[[str], Any] | None = None
        self.hook_before = False  # the hook runs before the batch reaches the provider
        self.poll_errors = 0  # polls that fail (a 5xx) before the provider answers

    async def submit_batch(self, requests: list[BatchRequest], *, token: str) -> str:
        batch_id = f"batch_{len(self.batches)}"
        if self.submit_hook is not None and self.hook_before:
            await self.submit_hook(batch_id)
        self.batches[batch_id] = list(requests)
        self.tokens[token] = batch_id
        if self.submit_hook is not None and not self.hook_before:
            await self.submit_hook(batch_id)
        return batch_id

    async def batch_state(self, batch_id: str) -> BatchState:
        if self.poll_errors:
            self.poll_errors -= 1
            raise ServerError("overloaded", endpoint="ep", status=529)
        self.polls[batch_id] = self.polls.get(batch_id, 0) + 1
        ended = batch_id in self.cancelled or self.polls[batch_id] >= self.polls_to_end
        return BatchState(status="ended" if ended else "running")

    async def batch_results(self, batch_id: str) -> AsyncIterator[BatchLine]:
        for r in self.batches[batch_id]:
            content = _content(r)
            if content in self.not_run:
                self.not_run.discard(content)
                yield BatchLine(r.custom_id, error="batch request expired", rerun=True)
                continue
            yield BatchLine(
                r.custom_id,
                result=ChatResult(
                    texts=[f"reply to {content}"],
                    finish_reasons=["stop"],
                    usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
                ),
            )

    async def find_batch(self, token: str) -> str | None:
        return self.tokens.get(token) if self.keeps_tokens else None

    async def cancel_batch(self, batch_id: str) -> None:
        self.cancelled.append(batch_id)

    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches.values()]

    def submissions_of(self, content: str) -> int:
        return sum(1 for b in self.batches.values() for r in b if _content(r) == content)


def _content(request: BatchRequest) -> str:
    """The first message's content of a request the batcher submitted."""
    messages = request.body["messages"]
    assert isinstance(messages, list) and isinstance(messages[0], dict)
    return str(messages[0]["content"])


def _body(i: int) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": f"q{i:03d}"}]}


def _key(i: int) -> bytes:
    return f"key-{i:03d}".encode()


class Run:
    """A batcher over a ledger and cache in ``tmp``, its loop running as a task."""

    def __init__(self, tmp: Path, api: FakeProvider, **settings: Any) -> None:
        self.ledger = BatchLedger(tmp / "cache.sqlite")
        self.cache = ResponseCache(tmp / "cache.sqlite")
        options = {"max_wait_s": 0.05, "poll_s": 0.01, "poll_max_s": 0.04, **settings}
        self.alive = 0  # the watchdog's progress signals
        self.batcher = Batcher(
            "ep", api, self.ledger, self.cache, BatchSettings(**options), on_alive=self._alive
        )
        self.task: asyncio.Task[None] | None = None

    def _alive(self) -> None:
        self.alive += 1

    async def __aenter__(self) -> Run:
        return self

    def start(self) -> None:
        self.task = asyncio.create_task(self.batcher.run())

    async def __aexit__(self, *exc: object) -> None:
        # Ends the loop as a kill would: nothing more reaches the ledger.
        if self.task is not None:
            self.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await self.task
        await self.batcher.aclose()
        self.ledger.close()
        self.cache.close()


def _counts(tmp: Path) -> dict[str, int]:
    ledger = BatchLedger(tmp / "cache.sqlite")
    try:
        return ledger.counts("ep")
    finally:
        ledger.close()


async def _calls(run: Run, ids: range) -> list[ChatResult | BaseException]:
    calls = [asyncio.ensure_future(run.batcher.call(_key(i), _body(i))) for i in ids]
    await asyncio.sleep(0)  # every call waits for the recovery before the loop starts
    run.start()
    return list(await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 10))


async def test_a_stage_is_split_at_max_requests(tmp_path: Path) -> None:
    api = FakeProvider()
    async with Run(tmp_path, api, max_requests=3) as run:
        results = await _calls(run, range(7))
    assert api.sizes() == [3, 3, 1]
    assert [r.texts for r in results if isinstance(r, ChatResult)] == [
        [f"reply to q{i:03d}"] for i in range(7)
    ]
    assert run.batcher.stats["batches_submitted"] == 3
    assert run.batcher.stats["requests_submitted"] == 7


async def test_the_providers_cap_bounds_a_larger_setting(tmp_path: Path) -> None:
    api = FakeProvider(max_requests=2)
    async with Run(tmp_path, api, max_requests=50_000) as run:
        await _calls(run, range(5))
    assert run.batcher.max_requests == 2
    assert api.sizes() == [2, 2, 1]


async def test_a_stage_is_split_at_max_bytes(tmp_path: Path) -> None:
    api = FakeProvider()
    one = len(b'{"model":"m","messages":[{"role":"user","content":"q000"}]}') + 200
    async with Run(tmp_path, api, max_bytes=2 * one + one // 2) as run:
        results = await _calls(run, range(5))
    assert api.sizes() == [2, 2, 1]
    assert all(isinstance(r, ChatResult) for r in results)


async def test_polls_back_off_up_to_poll_max(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        if delay > 0:
            waits.append(delay)
        return await real_sleep(0, result)

    api = FakeProvider()
    api.polls_to_end = 6
    monkeypatch.setattr(asyncio, "sleep", sleep)
    async with Run(tmp_path, api, poll_s=1.0, poll_max_s=5.0, max_wait_s=0.0) as run:
        await _calls(run, range(1))
    assert api.polls == {"batch_0": 6}
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert run.alive == 6 + 1  # every answered poll, and the results read, are progress


async def test_a_failed_poll_is_tried_again_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, result: Any = None) -> Any:
        if delay > 0:
            waits.append(delay)
        return await real_sleep(0, result)

    api = FakeProvider()
    api.poll_errors = 2
    monkeypatch.setattr(asyncio, "sleep", sleep)
    async with Run(tmp_path, api, poll_s=1.0, poll_max_s=5.0, max_wait_s=0.0) as run:
        results = await _calls(run, range(2))
    assert all(isinstance(r, ChatResult) for r in results)
    assert waits == [1.0, 2.0]  # after each failed poll, doubling
    assert run.alive == 1 + 1  # failed polls are not progress


async def test_requests_not_run_go_online_with_retry_with_online(tmp_path: Path) -> None:
    api = FakeProvider()
    api.not_run = {"q001", "q003"}
    async with Run(tmp_path, api, retry_with="online") as run:
        results = await _calls(run, range(4))
    assert [type(r) for r in results] == [ChatResult, OnlineRetry, ChatResult, OnlineRetry]
    assert api.sizes() == [4]  # nothing submitted in a second batch
    assert run.batcher.stats["requests_online"] == 2
    assert run.batcher.stats["requests_resubmitted"] == 2


async def test_requests_not_run_go_in_a_new_batch_by_default(tmp_path: Path) -> None:
    api = FakeProvider()
    api.not_run = {"q001"}
    async with Run(tmp_path, api) as run:
        results = await _calls(run, range(3))
    assert all(isinstance(r, ChatResult) for r in results)
    assert api.sizes() == [3, 1] and api.submissions_of("q001") == 2
    assert run.batcher.stats["requests_online"] == 0


async def test_a_whole_batch_that_expired_is_submitted_again_then_fails(tmp_path: Path) -> None:
    api = FakeProvider()
    api.not_run = {"q000", "q001", "q002"}  # the first batch ran nothing (it expired)
    async with Run(tmp_path, api) as run:
        results = await _calls(run, range(3))
    assert all(isinstance(r, ChatResult) for r in results)
    assert api.sizes() == [3, 3]
    assert run.batcher.stats["requests_resubmitted"] == 3
    # Past max_resubmits, a request the batches never run fails (as a server error).
    forever = FakeProvider()
    forever_not_run = {f"q{i:03d}" for i in range(3, 5)}

    async def never(batch_id: str) -> None:
        forever.not_run |= forever_not_run

    forever.submit_hook = never
    (tmp_path / "second").mkdir()
    async with Run(tmp_path / "second", forever, max_resubmits=2) as run:
        results = await _calls(run, range(3, 5))
    assert all(isinstance(r, ServerError) for r in results)
    assert forever.sizes() == [2, 2, 2]  # the first submission and two more
    assert run.batcher.stats["errors"] == 2


async def _stop_with_a_batch_running(tmp_path: Path, api: FakeProvider, **settings: Any) -> Run:
    api.polls_to_end = 10**9
    run = Run(tmp_path, api, **settings)
    calls = [asyncio.ensure_future(run.batcher.call(_key(i), _body(i))) for i in range(3)]
    run.start()
    for _ in range(200):
        if api.batches:
            break
        await asyncio.sleep(0.01)
    assert api.sizes() == [3]
    await run.batcher.drain()
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(o, Draining) for o in outcomes)
    with pytest.raises(Draining):
        await run.batcher.call(_key(9), _body(9))
    return run


async def test_ctrl_c_leaves_batches_running_and_a_rerun_reads_them(tmp_path: Path) -> None:
    api = FakeProvider()
    run = await _stop_with_a_batch_running(tmp_path, api)
    await run.__aexit__()
    assert api.cancelled == []
    assert _counts(tmp_path) == {"submitted": 1}
    # The next run: the batch ends; its replies are read, nothing is submitted again.
    api.polls_to_end = 1
    api.polls.clear()
    async with Run(tmp_path, api) as rerun:
        results = await _calls(rerun, range(3))
        assert rerun.ledger.counts("ep") == {"done": 1}
    assert [r.texts for r in results if isinstance(r, ChatResult)] == [
        [f"reply to q{i:03d}"] for i in range(3)
    ]
    assert api.sizes() == [3]
    assert rerun.batcher.stats["batches_submitted"] == 0


async def test_cancel_on_stop_cancels_the_running_batches(tmp_path: Path) -> None:
    api = FakeProvider()
    run = await _stop_with_a_batch_running(tmp_path, api, cancel_on_stop=True)
    await run.__aexit__()
    assert api.cancelled == ["batch_0"]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("reached", [True, False])
async def test_a_kill_between_the_record_and_the_id(
    tmp_path: Path, provider: str, reached: bool
) -> None:
    """The ledger recorded the submission, the process died before it had the batch's id:
    after the provider took the batch (``reached``), or before it was asked."""
    api = FakeProvider(keeps_tokens=provider == "openai")
    gone = asyncio.Event()

    async def die(batch_id: str) -> None:
        gone.set()
        await asyncio.Event().wait()  # killed here: record_submitted never runs

    api.submit_hook = die
    api.hook_before = not reached
    run = Run(tmp_path, api)
    calls = [asyncio.ensure_future(run.batcher.call(_key(i), _body(i))) for i in range(3)]
    run.start()
    await asyncio.wait_for(gone.wait(), 5)
    await run.__aexit__()
    for call in calls:
        call.cancel()
    assert _counts(tmp_path) == {"pending": 1}
    assert api.sizes() == ([3] if reached else [])
    api.submit_hook = None
    async with Run(tmp_path, api) as rerun:
        results = await _calls(rerun, range(3))
    assert all(isinstance(r, ChatResult) for r in results)
    stats = rerun.batcher.stats
    if provider == "openai":
        # Found by its token and polled, or known never to have been submitted.
        assert stats["recovered_by_token"] == int(reached)
        assert stats["resubmitted_unknown"] == 0
        assert api.sizes() == [3]
    else:
        # Cannot be found: submitted (once more, if it had reached the provider), and
        # counted either way, since the ledger cannot tell which.
        assert stats["recovered_by_token"] == 0 and stats["resubmitted_unknown"] == 3
        assert api.sizes() == ([3, 3] if reached else [3])
