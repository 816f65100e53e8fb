"""Live progress display: reads :class:`~engine.metrics.core.Metrics`, never owns state.

Two modes: on a terminal a ``rich`` progress bar with the key numbers beside it;
elsewhere (logs, pipes, CI) one plain line every ``plain_interval_s`` seconds. The
display must never break a run, so rendering errors are logged once and swallowed.
``rich`` is imported only when the rich mode is used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, TextIO

from ..clock import Clock
from .core import Metrics
from .report import Priced, _usd

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

__all__ = ("Progress",)

log = logging.getLogger("engine.metrics")


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _rate(v: float) -> str:
    """A compact rate: 12.5, 980, 64.8k, 13.4M."""
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


class Progress:
    """Renders live progress of a run from its metrics.

    Args:
        metrics: the run's metrics (read only).
        stream: where to write (the CLI passes stderr).
        interval_s: seconds between refreshes in :meth:`run`.
        plain_interval_s: seconds between lines in plain mode.
        clock: monotonic seconds for throttling and the bar's elapsed time
            (default: the metrics' clock).
        use_rich: True for a rich bar, False for plain lines, None for rich only when
            ``stream`` is a terminal.
        prices: endpoint name -> price (``engine.config.Price`` fits); when any is
            given, the line shows the cost so far.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        stream: TextIO,
        interval_s: float = 0.5,
        plain_interval_s: float = 10.0,
        clock: Clock | None = None,
        use_rich: bool | None = None,
        prices: Mapping[str, Priced] | None = None,
    ) -> None:
        self.metrics = metrics
        self.prices: dict[str, Priced] = dict(prices or {})
        self.stream = stream
        self.interval_s = interval_s
        self.plain_interval_s = plain_interval_s
        self.clock: Clock = clock if clock is not None else metrics.clock
        if use_rich is None:
            try:
                use_rich = bool(stream.isatty())
            except (AttributeError, ValueError, OSError):
                use_rich = False
        self.use_rich = use_rich
        self._last_line_at = self.clock()
        self._rich: RichProgress | None = None
        self._task: TaskID | None = None
        self._stats = ""
        self._failed = False
        self._closed = False

    # ---------------------------------------------------------------- text
    def _endpoint_parts(self) -> list[str]:
        parts = []
        for name, e in self.metrics.endpoints.items():
            rpm, tpm = e.rates()
            parts.append(f"{name} {_rate(rpm)} rpm {_rate(tpm)} tpm in-flight {e.in_flight}")
        return parts

    def _cost(self) -> str | None:
        """``cost $X`` so far, ``+?`` when an endpoint in use has no price; None unpriced.

        With a known item total, it adds a projection at this invocation's cost per
        finished item, e.g. ``cost $0.0270 (~$0.1350 at end)``: a rough figure (work
        done before the first item finishes, such as CodecLM's encoding, is spread over
        the items), shown so that a run heading past its budget is seen early.
        """
        if not self.prices:
            return None
        m = self.metrics
        total = 0.0
        unknown = False
        for name, e in m.endpoints.items():
            price = self.prices.get(name)
            if price is not None:
                total += price.cost(e.prompt_tokens, e.completion_tokens)
            elif e.requests:
                unknown = True
        text = f"cost {_usd(total)}{'+?' if unknown else ''}"
        if m.items_total is not None and m.items_done > 0 and not unknown:
            remaining = m.items_total - m.items_done - m.items_skipped
            if remaining > 0:
                text += f" (~{_usd(total + total / m.items_done * remaining)} at end)"
        return text

    def _eta(self) -> str:
        m = self.metrics
        if m.items_total is None:
            return "?"
        remaining = m.items_total - m.items_done - m.items_skipped
        if remaining <= 0:
            return "0s"
        elapsed = m.elapsed()
        if m.items_done <= 0 or elapsed <= 0:
            return "?"
        return _duration(remaining * elapsed / m.items_done)

    def _stats_text(self, *, with_eta: bool = True) -> str:
        """The key numbers after the items count (shared by both modes)."""
        m = self.metrics
        rows = m.rows
        parts = [
            f"kept {rows.get('kept', 0)} rejected {rows.get('rejected', 0)} "
            f"failed {rows.get('failed', 0)}",
            *self._endpoint_parts(),
            f"429s {sum(e.http_429 for e in m.endpoints.values())}",
        ]
        cost = self._cost()
        if cost is not None:
            parts.append(cost)
        if with_eta:
            parts.append(f"eta {self._eta()}")
        return " | ".join(parts)

    def render_line(self) -> str:
        """The plain progress line, e.g.
        ``[  12.3s] items 40/200 (20%) | kept 120 rejected 30 failed 0 | strong 12.5 rpm
        980 tpm in-flight 31 | 429s 0 | eta 40s``, with ``| cost $0.0123 (~$0.0615 at
        end)`` before the eta when prices are known.
        """
        m = self.metrics
        finished = m.items_done + m.items_skipped
        if m.items_total is None:
            items = f"items {finished}"
        else:
            pct = 100.0 * finished / m.items_total if m.items_total > 0 else 100.0
            items = f"items {finished}/{m.items_total} ({pct:.0f}%)"
        if m.items_skipped:
            items += f" ({m.items_skipped} resumed)"
        return f"[{m.elapsed():7.1f}s] {items} | {self._stats_text()}"

    # ----------------------------------------------------------- rendering
    def _start_rich(self) -> None:
        from rich.console import Console, RenderableType
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )
        from rich.progress import Progress as RichProgress
        from rich.text import Text

        display = self

        class _Bar(RichProgress):
            """The items bar, with the key numbers on their own (wrapping) line below."""

            def get_renderables(self) -> Iterable[RenderableType]:
                yield self.make_tasks_table(self.tasks)
                yield Text(display._stats, overflow="fold")

        self._rich = _Bar(
            TextColumn("items"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("eta {task.fields[eta]}"),
            console=Console(file=self.stream),
            transient=False,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=False,
            get_time=self.clock,
        )
        self._rich.start()
        self._task = self._rich.add_task("items", total=self.metrics.items_total, eta="?")

    def _update_rich(self) -> None:
        if self._rich is None:
            self._start_rich()
        assert self._rich is not None and self._task is not None
        m = self.metrics
        self._stats = self._stats_text(with_eta=False)
        self._rich.update(
            self._task,
            total=m.items_total,
            completed=m.items_done + m.items_skipped,
            eta=self._eta(),
        )
        self._rich.refresh()

    def _swallow(self, exc: BaseException) -> None:
        if not self._failed:
            self._failed = True
            log.warning("progress display failed (%s); the run continues", exc, exc_info=exc)

    def tick(self) -> None:
        """Refresh once: update the bar, or write a line when one is due (plain mode)."""
        if self._closed:
            return
        try:
            if self.use_rich:
                self._update_rich()
            else:
                now = self.clock()
                if now - self._last_line_at >= self.plain_interval_s:
                    self._last_line_at = now
                    self.stream.write(self.render_line() + "\n")
                    self.stream.flush()
        except Exception as exc:
            self._swallow(exc)

    async def run(self) -> None:
        """Refresh every ``interval_s`` until cancelled."""
        while True:
            self.tick()
            await asyncio.sleep(self.interval_s)

    def close(self) -> None:
        """Render the final state (the bar, or a last line) and stop; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.use_rich:
                self._update_rich()
                assert self._rich is not None
                self._rich.stop()
            else:
                self.stream.write(self.render_line() + "\n")
                self.stream.flush()
        except Exception as exc:
            self._swallow(exc)
