"""LAB's input: the taxonomy's leaves, their knowledge documents and chunks.

The taxonomy is read by :mod:`engine.io.taxonomy` (InstructLab's rules) and a knowledge
leaf's documents are fetched by :mod:`engine.io.knowledge`; this module puts them
together as the method's work: every leaf in sorted order, a refused one as a
:class:`~engine.records.BadInput` (its failed row keeps its place), and what ``validate``
shows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ...config import Config
from ...errors import InputError
from ...io.knowledge import KnowledgeSettings, chunk_markdown, load_documents
from ...io.taxonomy import Leaf, Problem, read_taxonomy
from ...records import BadInput, Item
from ..base import InputCheck
from .config import LabConfig

__all__ = ("Taxonomy", "chunks", "knowledge_settings", "leaf_items", "taxonomy_root")


def taxonomy_root(cfg: LabConfig, config: Config, input_path: Path) -> Path:
    """``[method.lab] taxonomy``, else ``run.input`` (a file there means its directory)."""
    if cfg.taxonomy:
        return config.resolve(cfg.taxonomy)
    return input_path if input_path.is_dir() else input_path.parent


def knowledge_settings(cfg: LabConfig, config: Config) -> KnowledgeSettings:
    """Where knowledge repositories are checked out, and the mirrors."""
    cache = cfg.document_cache
    return KnowledgeSettings(
        cache_dir=(
            config.resolve(cache)
            if cache
            else Path.home() / ".cache" / "synth-engine" / "knowledge"
        ),
        mirrors=dict(cfg.mirrors),
        timeout_s=cfg.git_timeout_s,
    )


def chunks(leaf: Leaf, words: int) -> list[tuple[str, str]]:
    """A knowledge leaf's chunks, as ``(unit, text)``: ``d<document>.c<chunk>``."""
    out: list[tuple[str, str]] = []
    for d, doc in enumerate(leaf.documents):
        for c, text in enumerate(chunk_markdown(doc.text, words)):
            out.append((f"d{d}.c{c}", text))
    return out


class Taxonomy:
    """Every leaf of a taxonomy, validated, with its documents read.

    Attributes:
        root: the taxonomy's directory.
        entries: every leaf in sorted order; a refused one as a BadInput.
        notes: files not read (``qna.yml``, ``foundational_skills/``) and other warnings.
    """

    def __init__(self, root: Path, entries: list[Leaf | BadInput], notes: list[Problem]) -> None:
        self.root = root
        self.entries = entries
        self.notes = notes

    @classmethod
    def read(
        cls, cfg: LabConfig, config: Config, input_path: Path, log: logging.Logger
    ) -> Taxonomy:
        """Read the taxonomy and fetch its documents (warnings are logged and kept).

        Raises:
            InputError: the taxonomy is not a directory or holds no leaf.
        """
        root = taxonomy_root(cfg, config, input_path)
        notes: list[Problem] = []

        def note(p: Problem) -> None:
            notes.append(p)
            log.warning("taxonomy: %s: %s", p.file, p.message)

        settings = knowledge_settings(cfg, config)
        entries: list[Leaf | BadInput] = []
        for entry in read_taxonomy(root, foundational_skills=cfg.foundational_skills, on_note=note):
            if isinstance(entry, Leaf) and entry.source is not None:
                file = entry.file

                def warn(message: str, file: str = file) -> None:
                    note(Problem(file, None, message))

                try:
                    entry = load_documents(entry, root, settings, warn=warn)
                except InputError as exc:
                    entry = BadInput(
                        index=len(entries),
                        key=entry.path,
                        source=f"{exc.path}:{exc.line}" if exc.line else str(exc.path),
                        reason=exc.reason,
                    )
            if isinstance(entry, Leaf) and entry.kind != "knowledge":
                mixed = {bool(s.context) for s in entry.skill_seeds}
                if len(mixed) > 1:
                    note(
                        Problem(
                            entry.file,
                            None,
                            f"seeds with and without a context: run as a {entry.kind} "
                            "(the first seed decides, as in InstructLab SDG)",
                        )
                    )
            entries.append(entry)
        return cls(root, entries, notes)

    def check(self, chunk_words: int) -> InputCheck:
        """What ``validate`` shows: leaves usable and refused (with file and line), the
        warnings, leaves by kind and the knowledge chunks."""
        check = InputCheck()
        kinds: Counter[str] = Counter()
        n_chunks = 0
        for entry in self.entries:
            if isinstance(entry, Leaf):
                check.items_ok += 1
                kinds[entry.kind] += 1
                n_chunks += len(chunks(entry, chunk_words))
            else:
                check.items_bad += 1
                file, _, line = entry.source.rpartition(":")
                if not file or not line.isdigit():
                    file, line = entry.source, ""
                check.add_problem(file, int(line) if line else None, entry.reason)
        for note in self.notes:
            check.add_warning(note.file, note.line, note.message)
        check.details = {
            "leaves_by_kind": dict(sorted(kinds.items())),
            "knowledge_chunks": n_chunks,
        }
        return check


def leaf_items(entries: list[Leaf | BadInput]) -> Iterator[Item | BadInput]:
    """One item per leaf, keyed by its path, in the taxonomy's order (a refused leaf as
    its BadInput)."""
    for index, entry in enumerate(entries):
        if isinstance(entry, BadInput):
            yield entry
        else:
            yield Item(index=index, key=entry.path, data={"leaf": entry.path}, source=entry.file)
