"""Semantic near-duplicate removal, shared by the built-in methods and users' pipelines.

:mod:`engine.dedup.semantic` is the stage (config, the batched async check, resume);
:mod:`engine.dedup.index` the embedding index and model; :mod:`engine.dedup.store` the
store of committed rows' embeddings. numpy and an embedding model are optional extras,
imported only when a run turns the check on.
"""

from __future__ import annotations

__all__ = ()
