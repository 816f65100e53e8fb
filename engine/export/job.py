"""``synth-engine export OUT``: an output's kept rows as a training dataset with its card.

:func:`export_output` refuses an output that is not complete (unless
``allow_incomplete``) or whose shards do not match the manifest (never exported:
rows that fail their checksums are not what the run wrote), holds the output's lock
shared while it reads (a run cannot start rebuilding the output under it; other
exports may read too), converts the rows
(:mod:`engine.export.rows`), writes them (:mod:`engine.export.writers`), the card
(:mod:`engine.export.card`) and ``export.json`` (what was exported from where, with
every file's SHA-256), and only then puts the directory in place: it is built beside
the target as ``.NAME.partial`` and renamed, so a crash never leaves half an export
where a whole one is expected. An existing directory is replaced only when it is an
earlier export (it has ``export.json``); anything else is refused, never deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec
import orjson

from ..errors import ConfigError, InputError, OutputLocked, ShardError
from ..io.lock import LOCK_NAME
from ..io.manifest import Manifest, load_manifest, verify_shards
from ..io.shards import iter_rows
from ..jsontypes import JSONObject
from .card import CardFacts, render_card
from .rows import RowConverter
from .writers import ExportFile, Format, write_rows

__all__ = ("EXPORT_MARKER", "ExportResult", "default_export_dir", "export_output")

EXPORT_MARKER = "export.json"
"""The file that makes a directory an export (and lets a new export replace it)."""


class ExportResult(msgspec.Struct, kw_only=True):
    """What an export wrote.

    Attributes:
        directory: the export directory.
        fmt: its format.
        method: the output's method.
        dataset: ``kept`` or the derived dataset exported.
        rows: training rows written.
        skipped: rows left out, by reason.
        files: the data files (paths inside ``directory``).
        simulated: a simulated endpoint wrote the rows.
        complete: the output was complete.
    """

    directory: Path
    fmt: Format
    method: str
    dataset: str
    rows: int
    skipped: dict[str, int]
    files: list[ExportFile]
    simulated: bool
    complete: bool


def default_export_dir(out_dir: Path, fmt: Format, dataset: str = "kept") -> Path:
    """``OUT/export-FORMAT`` (``OUT/export-NAME-FORMAT`` for a derived dataset)."""
    stem = f"export-{fmt}" if dataset == "kept" else f"export-{dataset}-{fmt}"
    return Path(out_dir) / stem


class _ReadLock:
    """A shared ``flock`` on ``OUT/.lock`` while the export reads: exports of one output
    run side by side, a run (which takes it exclusively, :class:`engine.io.lock.
    OutputLock`) cannot start rebuilding the output under them, and an export is
    refused while a run holds it."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> _ReadLock:
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ShardError(
                f"cannot open the output's lock file ({exc.strerror or exc})",
                path=str(self.path),
                hint="check the output path and its permissions",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            holder = b""
            with contextlib.suppress(OSError):
                holder = os.pread(fd, 1024, 0)
            os.close(fd)
            text = holder.decode("utf-8", "replace").strip()
            raise OutputLocked(
                "a run is writing this output" + (f" ({text})" if text else ""),
                path=str(self.path.parent),
                holder=text,
            ) from exc
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _checked_manifest(out_dir: Path, *, allow_incomplete: bool) -> Manifest:
    manifest = load_manifest(out_dir)
    if manifest is None:
        raise InputError(
            "no manifest.json: not a synth-engine output, or nothing committed yet "
            "(run synth-engine run CONFIG first, or check the path)",
            path=str(out_dir),
        )
    problems = verify_shards(out_dir, manifest)
    if problems:
        shown = "; ".join(problems[:3]) + (
            f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        )
        raise InputError(
            f"CORRUPT: {len(problems)} shard(s) do not match the manifest ({shown}); not "
            "exported. Rebuild it with synth-engine run CONFIG --force-new (every response "
            "already paid for replays from OUT/cache.sqlite)",
            path=str(out_dir),
        )
    if not manifest.complete and not allow_incomplete:
        why = manifest.stop_reason or "interrupted, or still running"
        raise InputError(
            f"the output is not complete ({why}): run the same command again to finish it, "
            "or pass --allow-incomplete to export the rows committed so far",
            path=str(out_dir),
        )
    return manifest


def _read_config(out_dir: Path) -> JSONObject | None:
    try:
        config = orjson.loads((out_dir / "config.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return config if isinstance(config, dict) else None


def _derived_rows(out_dir: Path, manifest: Manifest, name: str) -> Iterator[JSONObject]:
    """The rows of a derived dataset the manifest lists, after checking its SHA-256."""
    recorded = manifest.extra.get("derived")
    listed = [d for d in recorded if isinstance(d, Mapping)] if isinstance(recorded, list) else []
    names = [str(d.get("name")) for d in listed]
    wanted = name if name.endswith(".jsonl") else f"{name}.jsonl"
    entry = next((d for d in listed if d.get("name") == wanted), None)
    if entry is None:
        known = ", ".join(n.removesuffix(".jsonl") for n in names) or "none"
        raise ConfigError(
            f"{out_dir} has no derived dataset {name!r} (it has: {known})",
            path="--from",
            hint="use kept, or one of the names listed",
        )
    path = out_dir / wanted
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path=str(path)) from exc
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise InputError(
            "SHA-256 differs from the manifest: not exported (run the same command again to "
            "rewrite the derived datasets)",
            path=str(path),
        )
    for line in data.splitlines():
        if line.strip():
            yield orjson.loads(line)


def _config_models(config: Mapping[str, object] | None) -> dict[str, list[str]]:
    if not isinstance(config, Mapping):
        return {}
    roles = config.get("roles") or {}
    found = config.get("endpoints")
    endpoints: Mapping[object, object] = found if isinstance(found, Mapping) else {}
    out: dict[str, list[str]] = {}
    for role, ref in roles.items() if isinstance(roles, Mapping) else ():
        names = [ref] if isinstance(ref, str) else list(ref or [])
        models = {str(e.get("model")) for n in names if isinstance(e := endpoints.get(n), Mapping)}
        if models:
            out[str(role)] = sorted(models)
    return out


def _prepare_target(target: Path) -> Path:
    """The staging directory beside ``target``; refuses a target that is not an export."""
    if target.exists():
        if not target.is_dir() or (
            any(target.iterdir()) and not (target / EXPORT_MARKER).is_file()
        ):
            raise ConfigError(
                f"{target} exists and is not an export of synth-engine (no {EXPORT_MARKER}); "
                "nothing was changed",
                path="--output",
                hint="choose another --output, or move it away first",
            )
    staging = target.parent / f".{target.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _swap_in(staging: Path, target: Path) -> None:
    old = target.parent / f".{target.name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def export_output(
    out_dir: Path,
    fmt: Format,
    *,
    output: Path | None = None,
    dataset: str = "kept",
    allow_incomplete: bool = False,
    rows_per_file: int = 100_000,
    repo_id: str | None = None,
) -> ExportResult:
    """Export ``out_dir``'s rows (or one of its derived datasets) for training.

    Args:
        out_dir: a synth-engine output directory.
        fmt: ``messages``, ``parquet`` or ``hf``.
        output: the export directory (default :func:`default_export_dir`).
        dataset: ``kept``, or a derived dataset's name (e.g. ``training_mix``).
        allow_incomplete: export an output that is not complete (its committed rows).
        rows_per_file: rows per Parquet file (``parquet``, ``hf``).
        repo_id: the Hub repository it will be pushed to (named on the card).

    Raises:
        InputError: no output, a corrupt one, or (without ``allow_incomplete``) an
            incomplete one.
        ConfigError: ``output`` exists and is not an export; an unknown ``dataset``; the
            format's library is missing.
        OutputLocked: a run holds the output.
        ShardError: the export cannot be written.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError("no such output directory", path=str(out_dir))
    with _ReadLock(out_dir):
        manifest = _checked_manifest(out_dir, allow_incomplete=allow_incomplete)
        if dataset != "kept" and not manifest.complete:
            raise InputError(
                "derived datasets are written when an output is complete; this one is not "
                "(export --from kept with --allow-incomplete instead)",
                path=str(out_dir),
            )
        config = _read_config(out_dir)
        converter = RowConverter(manifest.method, config, simulated=manifest.simulated)
        target = Path(output) if output is not None else default_export_dir(out_dir, fmt, dataset)
        source = (
            iter_rows(out_dir, "kept")
            if dataset == "kept"
            else _derived_rows(out_dir, manifest, dataset)
        )
        skipped: dict[str, int] = {}
        models: dict[str, set[str]] = {}
        count = 0

        def rows() -> Iterator[dict[str, object]]:
            nonlocal count
            for row in source:
                converted, reason = converter.convert(row)
                if converted is None:
                    key = reason or "unusable"
                    skipped[key] = skipped.get(key, 0) + 1
                    continue
                seen = row.get("models")
                for role, model in seen.items() if isinstance(seen, Mapping) else ():
                    models.setdefault(str(role), set()).add(str(model))
                count += 1
                yield converted

        staging = _prepare_target(target)
        try:
            files = write_rows(fmt, rows(), staging, converter.columns, rows_per_file=rows_per_file)
            facts = CardFacts(
                method=manifest.method,
                fmt=fmt,
                dataset=dataset,
                rows=count,
                skipped=skipped,
                totals=dict(manifest.totals),
                simulated=manifest.simulated,
                complete=manifest.complete,
                stop_reason=manifest.stop_reason,
                models={r: sorted(m) for r, m in models.items()} or _config_models(config),
                config=config,
                config_hash=manifest.config_hash,
                engine_version=manifest.engine_version,
                columns=converter.columns,
                files=files,
                repo_id=repo_id,
            )
            (staging / "README.md").write_text(render_card(facts), encoding="utf-8")
            record = {
                "format": fmt,
                "dataset": dataset,
                "method": manifest.method,
                "simulated": manifest.simulated,
                "complete": manifest.complete,
                "config_hash": manifest.config_hash,
                "engine_version": manifest.engine_version,
                "rows": count,
                "skipped": skipped,
                "columns": [{"name": n, "type": t} for n, t in converter.columns],
                "files": msgspec.to_builtins(files),
            }
            (staging / EXPORT_MARKER).write_bytes(
                orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
            )
            _swap_in(staging, target)
        except OSError as exc:
            raise ShardError(
                f"cannot write the export ({exc.strerror or exc})",
                path=str(target),
                hint="check free disk space and the --output path",
            ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(
        directory=target,
        fmt=fmt,
        method=manifest.method,
        dataset=dataset,
        rows=count,
        skipped=skipped,
        files=files,
        simulated=manifest.simulated,
        complete=manifest.complete,
    )
