"""``python -m tests.integration.batch_kill_child PHASE N -- ARGS``: the engine's CLI with
ARGS, SIGKILLed by itself the N-th time it reaches PHASE of batch mode (for
``test_batch_kill_phases.py``; the engine itself has no such hook).

Phases:
    pending: the ledger has recorded a submission (token and keys); the provider has not
        been asked.
    unrecorded: the provider has the batch and answered with its id; the ledger has not
        recorded the id (the window docs/batch.md describes).
    polling: a running batch has just been polled.
    reading: some of a batch's results are in the cache, not all.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from engine.cli import main
from engine.llm import batch as batch_mod

__all__ = ("arm",)


def _die() -> None:
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(phase: str, nth: int) -> None:
    """Patch the batch mode so that the ``nth`` time it reaches ``phase``, it dies."""
    seen = 0

    def hit() -> bool:
        nonlocal seen
        seen += 1
        return seen >= nth

    ledger = batch_mod.BatchLedger
    batcher = batch_mod.Batcher
    if phase == "pending":
        record_pending = ledger.record_pending

        def pending(self: Any, *args: Any, **kwargs: Any) -> None:
            record_pending(self, *args, **kwargs)
            if hit():
                _die()

        ledger.record_pending = pending  # type: ignore[method-assign]
    elif phase == "unrecorded":
        record_submitted = ledger.record_submitted

        def unrecorded(self: Any, token: str, batch_id: str) -> None:
            if hit():
                _die()
            record_submitted(self, token, batch_id)

        ledger.record_submitted = unrecorded  # type: ignore[method-assign]
    elif phase == "polling":
        init = batcher.__init__

        def init_with_hook(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            state_of = self.api.batch_state

            async def batch_state(batch_id: str) -> Any:
                state = await state_of(batch_id)
                if state.status == "running" and hit():
                    _die()
                return state

            self.api.batch_state = batch_state

        batcher.__init__ = init_with_hook  # type: ignore[method-assign]
    elif phase == "reading":
        settle = batcher._settle

        def settling(self: Any, *args: Any, **kwargs: Any) -> None:
            settle(self, *args, **kwargs)
            if hit():
                _die()

        batcher._settle = settling  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown phase {phase!r}")


if __name__ == "__main__":
    phase, nth, sep, *args = sys.argv[1:]
    assert sep == "--"
    arm(phase, int(nth))
    raise SystemExit(main(args))
