"""Output I/O: atomic JSONL shards, the manifest with its done set, and input readers.

The shard and manifest names are re-exported here; the input readers live in
:mod:`engine.io.readers`.
"""

from __future__ import annotations

from .manifest import DoneSet as DoneSet
from .manifest import DoneState as DoneState
from .manifest import Manifest as Manifest
from .manifest import ShardInfo as ShardInfo
from .manifest import load_manifest as load_manifest
from .manifest import verify_shards as verify_shards
from .manifest import write_manifest as write_manifest
from .shards import KINDS as KINDS
from .shards import ResumeState as ResumeState
from .shards import ShardSink as ShardSink
from .shards import iter_rows as iter_rows

__all__ = (
    "KINDS",
    "DoneSet",
    "DoneState",
    "Manifest",
    "ResumeState",
    "ShardInfo",
    "ShardSink",
    "iter_rows",
    "load_manifest",
    "verify_shards",
    "write_manifest",
)
