"""Reading the files a benchmark is fed: prompt datasets and arrival traces.

Prompt datasets (``--dataset``), one record per line (JSONL) or one JSON array:

* ShareGPT: ``{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}``
  (``from`` also ``user``/``assistant``/``system``/``chatgpt``/``bing``/``bard``; the
  OpenAI-style ``{"role", "content"}`` items are read too). Each user turn is one request;
  the reference reply after it, when there is one, gives that request's output length.
* chat: ``{"messages": [{"role": ..., "content": ...}, ...]}``; a trailing assistant
  message is the reference reply (its length, not its text, is used).
* prompt: ``{"prompt": "..."}`` (or ``"text"``/``"instruction"``), with an optional
  ``"max_tokens"``/``"output_tokens"``/``"output_len"``.

Traces (``--trace``): one request per row with its arrival time and token counts.

* Mooncake (``kvcache-ai/Mooncake`` FAST'25 release): JSONL ``{"timestamp": ms,
  "input_length", "output_length", "hash_ids": [...]}``; each hash id names a 512-token
  block, so requests sharing ids share a prompt prefix.
* Azure LLM inference (``Azure/AzurePublicDataset``): CSV ``TIMESTAMP,ContextTokens,
  GeneratedTokens`` with date-time stamps.
* generic JSONL: ``{"timestamp": s, "input_tokens", "output_tokens"}`` (also
  ``prompt_tokens``/``completion_tokens``).

Every malformed record is an :class:`~engine.errors.InputError` naming the file and line.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import msgspec

from ..errors import InputError
from .tokens import TokenCounter

__all__ = ("Conversation", "TraceRow", "Turn", "read_prompts", "read_trace")

_USER = {"human", "user"}
_ASSISTANT = {"gpt", "assistant", "chatgpt", "bing", "bard", "model"}


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """One request of a conversation: the user's text and, if known, the reply's length.

    Attributes:
        content: the user message.
        reply_tokens: tokens of the dataset's reference reply (None: no reply in the file).
    """

    content: str
    reply_tokens: int | None = None


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    """A dataset record: one or more user turns, with an optional system message.

    Attributes:
        turns: the user turns, in order.
        system: a system message sent first, if the record has one.
        history: messages before the first turn (a chat record's earlier turns).
        max_tokens: the record's own output length, if it gives one.
        source: ``file:line`` of the record.
    """

    turns: tuple[Turn, ...]
    system: str | None = None
    history: tuple[tuple[str, str], ...] = ()
    max_tokens: int | None = None
    source: str = ""


class TraceRow(msgspec.Struct, frozen=True, kw_only=True):
    """One request of a trace.

    Attributes:
        at: arrival time in seconds (any origin).
        input_tokens: prompt length.
        output_tokens: output length.
        hash_ids: prompt blocks (Mooncake): equal ids are equal text.
    """

    at: float
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...] = ()


def _records(path: Path) -> list[tuple[int, object]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", path=str(path)) from exc
    if text.lstrip().startswith("["):
        try:
            items = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise InputError(f"not a JSON array: {exc}", path=str(path)) from exc
        return [(i + 1, item) for i, item in enumerate(items)]
    out = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((number, msgspec.json.decode(line)))
        except msgspec.DecodeError as exc:
            raise InputError(f"not a JSON object: {exc}", path=str(path), line=number) from exc
    return out


def _text(value: object, where: str, line: int, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # OpenAI content parts
        return "".join(p.get("text", "") for p in value if isinstance(p, dict))
    raise InputError(f"{key} must be a string, not {type(value).__name__}", path=where, line=line)


def _int(value: object, where: str, line: int, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise InputError(f"{key} must be a number >= 0, not {value!r}", path=where, line=line)
    return int(value)


def _chat(
    items: list[object], where: str, line: int, tokens: TokenCounter, key: str
) -> Conversation | None:
    system = None
    msgs: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, dict):
            raise InputError(f"each item of {key} must be an object", path=where, line=line)
        role = str(item.get("from", item.get("role", ""))).lower()
        text = _text(item.get("value", item.get("content", "")), where, line, key)
        if role == "system":
            system = text
        elif role in _USER:
            msgs.append(("user", text))
        elif role in _ASSISTANT:
            msgs.append(("assistant", text))
        else:
            raise InputError(f"unknown role {role!r} in {key}", path=where, line=line)
    users = [i for i, (role, _) in enumerate(msgs) if role == "user"]
    if not users:
        return None

    def reply_after(i: int) -> int | None:
        nxt = msgs[i + 1] if i + 1 < len(msgs) else None
        return tokens.count(nxt[1]) if nxt is not None and nxt[0] == "assistant" else None

    if key == "messages":  # one request: the last user message, after the record's history
        last = users[-1]
        turns: tuple[Turn, ...] = (Turn(content=msgs[last][1], reply_tokens=reply_after(last)),)
        history = tuple(msgs[:last])
    else:  # a ShareGPT conversation: every user turn is a request
        turns = tuple(Turn(content=msgs[i][1], reply_tokens=reply_after(i)) for i in users)
        history = tuple(msgs[: users[0]])
    return Conversation(turns=turns, system=system, history=history, source=f"{where}:{line}")


def read_prompts(path: str | Path, tokens: TokenCounter) -> tuple[list[Conversation], int]:
    """Read a prompt dataset (format detected per record; see the module docstring).

    Returns:
        The conversations, and how many records were skipped for having no user turn.

    Raises:
        InputError: unreadable file, malformed record (with its line), or no usable record.
    """
    p = Path(path)
    where = str(p)
    out: list[Conversation] = []
    skipped = 0
    for line, rec in _records(p):
        if not isinstance(rec, dict):
            raise InputError("each record must be a JSON object", path=where, line=line)
        conv: Conversation | None
        if "conversations" in rec or "messages" in rec:
            key = "conversations" if "conversations" in rec else "messages"
            items = rec[key]
            if not isinstance(items, list):
                raise InputError(f"{key} must be a list", path=where, line=line)
            conv = _chat(items, where, line, tokens, key)
        else:
            field = next((k for k in ("prompt", "text", "instruction") if k in rec), None)
            if field is None:
                raise InputError(
                    "a record needs conversations, messages, prompt, text or instruction",
                    path=where,
                    line=line,
                )
            conv = Conversation(
                turns=(Turn(content=_text(rec[field], where, line, field)),),
                source=f"{where}:{line}",
            )
        if conv is None:
            skipped += 1
            continue
        limit = next(
            (rec[k] for k in ("max_tokens", "output_tokens", "output_len") if k in rec), None
        )
        if limit is not None:
            conv = msgspec.structs.replace(
                conv, max_tokens=max(1, _int(limit, where, line, "max_tokens"))
            )
        out.append(conv)
    if not out:
        raise InputError("the dataset holds no record with a user turn", path=where)
    return out, skipped


def _stamp(value: str, where: str, line: int) -> float:
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(value.strip()).timestamp()
    except ValueError:
        raise InputError(f"cannot read {value!r} as a time", path=where, line=line) from None


def _read_csv(p: Path) -> list[TraceRow]:
    where = str(p)
    try:
        with p.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read: {exc}", path=where) from exc
    if not rows:
        return []
    header = [h.strip().lower() for h in rows[0]]
    cols = {}
    for name, options in (
        ("at", ("timestamp", "time", "arrival_time")),
        ("in", ("contexttokens", "input_tokens", "prompt_tokens", "input_length")),
        ("out", ("generatedtokens", "output_tokens", "completion_tokens", "output_length")),
    ):
        found = next((header.index(o) for o in options if o in header), None)
        if found is None:
            raise InputError(f"no {options[0]} column (header {rows[0]})", path=where, line=1)
        cols[name] = found
    out = []
    for number, row in enumerate(rows[1:], 2):
        if not row:
            continue
        try:
            out.append(
                TraceRow(
                    at=_stamp(row[cols["at"]], where, number),
                    input_tokens=max(1, int(row[cols["in"]])),
                    output_tokens=max(1, int(row[cols["out"]])),
                )
            )
        except (IndexError, ValueError):
            raise InputError(f"malformed row {row!r}", path=where, line=number) from None
    return out


def read_trace(path: str | Path, unit: str = "auto") -> list[TraceRow]:
    """Read a trace (Mooncake JSONL, Azure CSV or generic JSONL), sorted by arrival time.

    Args:
        path: the trace file.
        unit: the JSONL timestamps' unit: ``"s"``, ``"ms"`` or ``"auto"`` (ms for
            Mooncake's ``input_length``/``output_length`` rows, else seconds).

    Raises:
        InputError: unreadable file, malformed row (with its line), or an empty trace.
    """
    p = Path(path)
    where = str(p)
    if p.suffix.lower() == ".csv":
        rows = _read_csv(p)
    else:
        rows = []
        for line, rec in _records(p):
            if not isinstance(rec, dict):
                raise InputError("each row must be a JSON object", path=where, line=line)
            at = next((rec[k] for k in ("timestamp", "time", "arrival_time") if k in rec), None)
            inp = next(
                (rec[k] for k in ("input_length", "input_tokens", "prompt_tokens") if k in rec),
                None,
            )
            outp = next(
                (
                    rec[k]
                    for k in ("output_length", "output_tokens", "completion_tokens")
                    if k in rec
                ),
                None,
            )
            if at is None or inp is None or outp is None:
                raise InputError(
                    "a trace row needs timestamp, input_length (or input_tokens) and "
                    "output_length (or output_tokens)",
                    path=where,
                    line=line,
                )
            ms = unit == "ms" or (unit == "auto" and "input_length" in rec)
            ids = rec.get("hash_ids") or ()
            if not isinstance(ids, list | tuple) or not all(isinstance(i, int) for i in ids):
                raise InputError("hash_ids must be a list of integers", path=where, line=line)
            rows.append(
                TraceRow(
                    at=_int(at, where, line, "timestamp") / 1000.0 if ms else float(at),
                    input_tokens=max(1, _int(inp, where, line, "input_length")),
                    output_tokens=max(1, _int(outp, where, line, "output_length")),
                    hash_ids=tuple(ids),
                )
            )
    if not rows:
        raise InputError("the trace holds no request", path=where)
    rows.sort(key=lambda r: r.at)
    return rows
