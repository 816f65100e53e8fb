"""Using the burst a server grants: turning ``x-ratelimit-remaining-*`` into bucket credit.

A learned limit of ``L`` per minute is paced by a window-safe bucket (burst ``B``, refill
``(L - B) / 60``: see :mod:`engine.llm.bucket`), which never sends more than ``L`` in any
60 s window. A server whose own limiter is a bucket of one minute's quota refilled
continuously (OpenAI's and Anthropic's documented model, and the simulated endpoint's)
allows more than that: a full bucket of ``L`` at once, then ``L / 60`` per second. Against
a bucket of 120 refilling at 2/s, the window-safe pacing took 101 s for 200 requests where
the server allowed them in 40 s. When a response says ``R`` remain, this module says how
much of ``R`` is this client's to spend now, so the gate can raise its bucket to it.

**What may be credited.** The server computed ``R`` at some moment ``t`` between sending
request *k* and receiving its response, after admitting *k*. Every send *j* whose
response had been received before *k* was sent was admitted before ``t``, so ``R`` already
counts it. Any other send (in flight, answered only after *k* was sent, or sent after *k*)
may be admitted after ``t`` and still take from ``R``. So ``R`` minus those sends is a
lower bound on what is left for new sends, whatever order the server admits requests in,
however long the responses take, and however the refill goes from ``t`` on (it only
adds). The gate numbers sends and answers (:class:`SendLedger`), raises its bucket to
that bound (never lowering it), charges every send as before and keeps refilling at the
learned window-safe rate, below the server's ``L / 60``: so the bucket never holds more
than the server's bucket does, less what is on its way there. For tokens, a send counts
with its whole reservation (prompt estimate + max_tokens x n).

A looser rule, ``R`` minus only the sends made after *k* (the first design), assumes the
server admits requests in the order sent; the property test found a 429 within 200
examples (an earlier send admitted after *k*'s response was produced, answered before
*k*'s long response ended). The price of the strict rule is small: the sends of one burst
are all unanswered when each goes, so their own answers credit nothing, and the next
credit comes from the first answer to a send made after them. What does matter is the
other side: the gate also lowers its bucket to what a response says is left
(:meth:`~engine.llm.bucket.TokenBucket.clamp`), and it used to subtract the requests in
flight from ``R`` there too. After a burst they are already counted in ``R``; subtracting
them again held the next request for a full window (200 requests against a bucket of
120 at 2/s took 70 s). Where the burst is credited, the clamp is to ``R`` itself.

**When.** Only where the headers show a continuously refilled bucket of one minute's
quota: ``R + reset * L / 60`` equals ``L`` within one unit plus one second's refill
(:func:`refills_as_bucket`). A fixed-window limiter (LiteLLM's proxy counts per calendar
minute; many APIs reset a counter at a window's end) answers ``R`` for the window and a
reset unrelated to ``R``: crediting ``R`` and then refilling continuously would overshoot
its window, so such servers keep the window-safe pacing, as do servers sending no reset
header. OpenAI's headers fit the model (limit 500, remaining 498, reset 176 ms); a
per-day token budget reported under ``limit-tokens`` does not (remaining 1,495,621 of
1,500,000 with a reset of 4 min 12 s) and is not credited.

**Not at all** where the limit was configured (``rpm``/``tpm`` in the config is a promise
never to exceed it in any 60 s window, kept as before), under a fleet's lease of a share of
the quota (a worker cannot see the other workers' sends, so no bound holds), nor after a
paced request got a 429 (the headers were not the whole rule: OpenAI documents that a
per-minute limit may be enforced over shorter periods; a key shared with another client
also shows it): from then on the gate paces window-safe for the rest of the run.
"""

from __future__ import annotations

__all__ = ("SendLedger", "credit", "refills_as_bucket")


class SendLedger:
    """Counts sends and answers (requests and reserved tokens) for :func:`credit`.

    Each send takes a snapshot of the answers received so far (:meth:`on_send`); when it
    ends (answered, failed or given up), :meth:`on_answer` counts the answer and gives
    the other sends that may not be counted in what its response reports.
    """

    __slots__ = ("answered", "answered_tokens", "sent", "sent_tokens")

    def __init__(self) -> None:
        self.sent = 0
        self.sent_tokens = 0.0
        self.answered = 0
        self.answered_tokens = 0.0

    def on_send(self, tokens: float) -> tuple[int, float]:
        """Count one send of ``tokens``; the snapshot to keep with it."""
        self.sent += 1
        self.sent_tokens += tokens
        return self.answered, self.answered_tokens

    def on_answer(self, snapshot: tuple[int, float], tokens: float) -> tuple[int, float]:
        """Count the end of a send; the others (and their tokens) not answered before it went."""
        answered, answered_tokens = snapshot
        self.answered += 1
        self.answered_tokens += tokens
        return self.sent - answered - 1, self.sent_tokens - answered_tokens - tokens


def refills_as_bucket(remaining: float, reset_s: float, limit: float) -> bool:
    """Whether ``remaining`` and ``reset`` describe a bucket of ``limit`` refilled at limit/60 s.

    Such a bucket is full again after ``(limit - remaining) / (limit / 60)`` seconds. The
    tolerance is one unit (servers report the level rounded down) plus one second's refill
    (resets are rounded, to the second in some formats).
    """
    if not (limit > 0 and remaining >= 0 and reset_s >= 0):
        return False
    per_s = limit / 60.0
    return abs(remaining + reset_s * per_s - limit) <= 1.0 + per_s


def credit(
    remaining: float | None, reset_s: float | None, limit: float | None, unacknowledged: float
) -> float | None:
    """The level a bucket may be raised to from one response, or None (no credit).

    Args:
        remaining: the response's ``remaining`` (requests or tokens).
        reset_s: its ``reset``, in seconds.
        limit: the per-minute limit (the response's, else the one learned).
        unacknowledged: sends (or tokens) that may not be counted in ``remaining``
            (:meth:`SendLedger.on_answer`).
    """
    if remaining is None or reset_s is None or limit is None:
        return None
    if not refills_as_bucket(remaining, reset_s, limit):
        return None
    return remaining - unacknowledged
