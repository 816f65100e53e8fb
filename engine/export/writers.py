"""The three export formats, each a writer of training rows into a directory.

* ``messages``: ``data/train.jsonl``, one JSON object per line (TRL's
  ``load_dataset("json", ...)``, InstructLab's ``data_path``). Needs nothing beyond
  the core dependencies.
* ``parquet``: ``data/train-00000-of-0000N.parquet`` (the Hub's layout), written with
  pyarrow in row groups of :data:`BATCH_ROWS`, a new file every ``rows_per_file`` rows.
* ``hf``: a ``datasets`` directory (``Dataset.save_to_disk``: ``data-*.arrow``,
  ``dataset_info.json``, ``state.json``), read back with ``datasets.load_from_disk``.
  Built from Parquet files written first (``Dataset.from_parquet``), so memory stays
  flat however many rows.

pyarrow and ``datasets`` are imported only by the formats that need them; without them
the error names the extra to install. Every writer streams: rows are converted and
written as they are read, so an export holds one batch in memory, not the dataset.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, TypeVar

import msgspec
import orjson

from ..errors import ConfigError, ShardError
from .rows import ColumnType

__all__ = (
    "BATCH_ROWS",
    "FORMATS",
    "ExportFile",
    "Format",
    "write_rows",
)

Format = Literal["messages", "parquet", "hf"]
FORMATS: tuple[Format, ...] = ("messages", "parquet", "hf")
BATCH_ROWS = 1000
"""Rows per Parquet row group (and per write): the rows an export holds at once."""

Columns = Sequence[tuple[str, ColumnType]]

_EXTRA_HINT = "pip install 'synth-engine[export]' (it adds datasets, which brings pyarrow)"

T = TypeVar("T")


class ExportFile(msgspec.Struct, kw_only=True):
    """A data file of an export, as ``export.json`` lists it.

    Attributes:
        name: path inside the export directory, e.g. ``data/train.jsonl``.
        rows: training rows in it.
        bytes: its size.
        sha256: hex SHA-256 of its contents.
    """

    name: str
    rows: int
    bytes: int
    sha256: str


def _digest(path: Path, root: Path, rows: int) -> ExportFile:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return ExportFile(
        name=path.relative_to(root).as_posix(), rows=rows, bytes=size, sha256=h.hexdigest()
    )


def _write_jsonl(rows: Iterable[Mapping[str, object]], root: Path) -> list[ExportFile]:
    path = root / "data" / "train.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("wb") as f:
        for row in rows:
            f.write(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE))
            count += 1
    return [_digest(path, root, count)]


def _import_pyarrow(fmt: str) -> ModuleType:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:
        raise ConfigError(
            f"--format {fmt} needs pyarrow, which is not installed",
            path="--format",
            hint=_EXTRA_HINT,
        ) from exc
    module: ModuleType = pyarrow
    return module


def _arrow_schema(pa: ModuleType, columns: Columns) -> Any:
    types = {
        "string": pa.string(),
        "bool": pa.bool_(),
        "float64": pa.float64(),
        "int64": pa.int64(),
        "messages": pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
    }
    return pa.schema([(name, types[kind]) for name, kind in columns])


def _batches(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_parquet(
    rows: Iterable[Mapping[str, object]], root: Path, columns: Columns, rows_per_file: int
) -> list[ExportFile]:
    pa = _import_pyarrow("parquet")
    schema = _arrow_schema(pa, columns)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    written: list[tuple[Path, int]] = []
    writer: Any = None
    in_file = 0

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            writer = None

    try:
        for batch in _batches(rows, min(BATCH_ROWS, rows_per_file)):
            start = 0
            while start < len(batch):
                if writer is None or in_file >= rows_per_file:
                    close()
                    path = data / f"train-{len(written):05d}.parquet.tmp"
                    writer = pa.parquet.ParquetWriter(str(path), schema, compression="zstd")
                    written.append((path, 0))
                    in_file = 0
                part = batch[start : start + rows_per_file - in_file]
                writer.write_table(pa.Table.from_pylist(part, schema=schema))
                in_file += len(part)
                written[-1] = (written[-1][0], written[-1][1] + len(part))
                start += len(part)
        if not written:  # no row: one empty file, so the table and its columns still load
            path = data / "train-00000.parquet.tmp"
            pa.parquet.write_table(schema.empty_table(), str(path), compression="zstd")
            written.append((path, 0))
    finally:
        close()
    files = []
    for i, (tmp, count) in enumerate(written):
        final = data / f"train-{i:05d}-of-{len(written):05d}.parquet"
        tmp.rename(final)
        files.append(_digest(final, root, count))
    return files


def _write_hf(
    rows: Iterable[Mapping[str, object]], root: Path, columns: Columns, rows_per_file: int
) -> list[ExportFile]:
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(
            "--format hf needs the datasets library, which is not installed",
            path="--format",
            hint=_EXTRA_HINT,
        ) from exc
    datasets.disable_progress_bars()
    staging = root / ".parquet"
    _write_parquet(rows, staging, columns, rows_per_file)
    parquet = sorted(str(p) for p in (staging / "data").glob("*.parquet"))
    try:
        ds = datasets.Dataset.from_parquet(
            parquet, cache_dir=str(staging / "cache"), keep_in_memory=False
        )
        ds.save_to_disk(str(root))
    except OSError as exc:
        raise ShardError(
            f"cannot write the datasets directory ({exc.strerror or exc})",
            path=str(root),
            hint="check free disk space",
        ) from exc
    count = len(ds)
    del ds
    shutil.rmtree(staging, ignore_errors=True)
    pa = _import_pyarrow("hf")
    files = []
    for path in sorted(root.glob("data-*.arrow")):
        with pa.memory_map(str(path)) as source:
            rows_in = sum(batch.num_rows for batch in pa.ipc.open_stream(source))
        files.append(_digest(path, root, rows_in))
    if sum(f.rows for f in files) != count:
        raise ShardError(
            f"the datasets directory holds {sum(f.rows for f in files)} rows, not {count}",
            path=str(root),
            hint="export again",
        )
    return files


def write_rows(
    fmt: Format,
    rows: Iterable[Mapping[str, object]],
    root: Path,
    columns: Columns,
    *,
    rows_per_file: int = 100_000,
) -> list[ExportFile]:
    """Write ``rows`` into the directory ``root`` in format ``fmt``; return its data files.

    Raises:
        ConfigError: the format's library is not installed (names the extra).
        ShardError: a file cannot be written.
    """
    try:
        if fmt == "messages":
            return _write_jsonl(rows, root)
        if fmt == "parquet":
            return _write_parquet(rows, root, columns, rows_per_file)
        return _write_hf(rows, root, columns, rows_per_file)
    except OSError as exc:
        raise ShardError(
            f"cannot write the export ({exc.strerror or exc})",
            path=str(root),
            hint="check free disk space and the --output path",
        ) from exc
