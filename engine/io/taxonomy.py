"""InstructLab taxonomy reader: a directory tree whose leaves are ``qna.yaml`` files.

Accepted format (``version: 3``):

* **skills** (under ``compositional_skills/`` or ``foundational_skills/``):
  ``task_description``, ``created_by`` and ``seed_examples``, each a ``question`` and an
  ``answer`` plus an optional ``context``. A leaf whose seeds carry a context is a
  *grounded* skill (then every seed must have one); otherwise it is a *freeform* skill.
* **knowledge** (under ``knowledge/``): ``domain``, ``document_outline``, ``created_by``,
  ``seed_examples`` (each a ``context`` with ``questions_and_answers``, a list of
  ``question``/``answer``), and a ``document`` block ``{repo, commit, patterns}``. Here
  ``repo`` is a *local* directory (absolute, or relative to the leaf's directory, else to
  the taxonomy root) and ``patterns`` are globs of Markdown files inside it; ``commit`` is
  recorded, not checked out.

Leaves are found by walking the tree in sorted order, so the order (and each leaf's
index) is the same on every run. A leaf that does not validate becomes a
:class:`~engine.records.BadInput` whose source is ``file:line`` of the offending node
and whose reason names the field; the other leaves are unaffected.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import msgspec
import yaml

from ..errors import InputError
from ..records import BadInput

__all__ = (
    "Document",
    "KnowledgeSeed",
    "Leaf",
    "LeafKind",
    "SkillSeed",
    "find_leaves",
    "read_leaf",
    "read_taxonomy",
)

LeafKind = Literal["freeform_skill", "grounded_skill", "knowledge"]

LEAF_NAME = "qna.yaml"
_SKILL_ROOTS = ("compositional_skills", "foundational_skills")
_KNOWLEDGE_ROOT = "knowledge"
_DOC_SUFFIXES = (".md", ".markdown")


class SkillSeed(msgspec.Struct, frozen=True, kw_only=True):
    """One skill seed example (``context`` is empty for freeform skills)."""

    question: str
    answer: str
    context: str = ""


class KnowledgeSeed(msgspec.Struct, frozen=True, kw_only=True):
    """One knowledge seed example: a context and its question/answer pairs."""

    context: str
    qa: tuple[tuple[str, str], ...]


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """A knowledge document: its path relative to the taxonomy root and its text."""

    name: str
    text: str


class Leaf(msgspec.Struct, frozen=True, kw_only=True):
    """A validated taxonomy leaf.

    Attributes:
        path: the leaf's directory relative to the taxonomy root (POSIX), e.g.
            ``compositional_skills/writing/freeform/haiku``; its stable identity.
        file: the ``qna.yaml`` path relative to the taxonomy root.
        kind: ``freeform_skill``, ``grounded_skill`` or ``knowledge``.
        created_by: the author field.
        task_description: skills' task description (knowledge: empty).
        domain: knowledge domain (skills: empty).
        document_outline: knowledge document outline (skills: empty).
        skill_seeds: skills' seed examples.
        knowledge_seeds: knowledge seed examples.
        documents: knowledge documents, in sorted order.
        commit: the document block's commit (recorded only).
    """

    path: str
    file: str
    kind: LeafKind
    created_by: str = ""
    task_description: str = ""
    domain: str = ""
    document_outline: str = ""
    skill_seeds: tuple[SkillSeed, ...] = ()
    knowledge_seeds: tuple[KnowledgeSeed, ...] = ()
    documents: tuple[Document, ...] = ()
    commit: str = ""

    @property
    def phase(self) -> str:
        """Training phase: ``knowledge`` or ``skills``."""
        return "knowledge" if self.kind == "knowledge" else "skills"


class _LeafError(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _mapping(node: yaml.Node, field: str) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise _LeafError(_line(node), f"{field}: expected a mapping")
    out: dict[str, yaml.Node] = {}
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise _LeafError(_line(key), f"{field}: keys must be plain strings")
        if key.value in out:
            raise _LeafError(_line(key), f"{field}: duplicate key {key.value!r}")
        out[str(key.value)] = value
    return out


def _need(m: dict[str, yaml.Node], key: str, parent: yaml.Node, field: str) -> yaml.Node:
    if key not in m:
        raise _LeafError(_line(parent), f"{field}: missing required field {key!r}")
    return m[key]


def _text(node: yaml.Node, field: str, *, required: bool = True) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag.endswith((":null", ":bool")):
        raise _LeafError(_line(node), f"{field}: expected a string")
    value = str(node.value).strip()
    if required and not value:
        raise _LeafError(_line(node), f"{field}: must not be empty")
    return value


def _seq(node: yaml.Node, field: str) -> list[yaml.Node]:
    if not isinstance(node, yaml.SequenceNode):
        raise _LeafError(_line(node), f"{field}: expected a list")
    if not node.value:
        raise _LeafError(_line(node), f"{field}: must not be empty")
    return list(node.value)


def _opt_text(m: dict[str, yaml.Node], key: str, field: str) -> str:
    return _text(m[key], f"{field}.{key}", required=False) if key in m else ""


def _kind_root(rel: Path) -> str:
    root = rel.parts[0] if len(rel.parts) > 1 else ""
    if root == _KNOWLEDGE_ROOT or root in _SKILL_ROOTS:
        return root
    return ""


def _skill_seeds(node: yaml.Node) -> tuple[SkillSeed, ...]:
    seeds: list[SkillSeed] = []
    with_context: list[bool] = []
    for i, ex in enumerate(_seq(node, "seed_examples")):
        field = f"seed_examples[{i}]"
        m = _mapping(ex, field)
        question = _text(_need(m, "question", ex, field), f"{field}.question")
        answer = _text(_need(m, "answer", ex, field), f"{field}.answer")
        context = _text(m["context"], f"{field}.context") if "context" in m else ""
        if with_context and with_context[0] != bool(context):
            raise _LeafError(
                _line(ex),
                f"{field}: mixes seeds with and without a context "
                "(a grounded skill needs a context on every seed)",
            )
        with_context.append(bool(context))
        seeds.append(SkillSeed(question=question, answer=answer, context=context))
    return tuple(seeds)


def _knowledge_seeds(node: yaml.Node) -> tuple[KnowledgeSeed, ...]:
    seeds: list[KnowledgeSeed] = []
    for i, ex in enumerate(_seq(node, "seed_examples")):
        field = f"seed_examples[{i}]"
        m = _mapping(ex, field)
        context = _text(_need(m, "context", ex, field), f"{field}.context")
        qa_node = _need(m, "questions_and_answers", ex, field)
        pairs: list[tuple[str, str]] = []
        for j, qa in enumerate(_seq(qa_node, f"{field}.questions_and_answers")):
            qf = f"{field}.questions_and_answers[{j}]"
            qm = _mapping(qa, qf)
            pairs.append(
                (
                    _text(_need(qm, "question", qa, qf), f"{qf}.question"),
                    _text(_need(qm, "answer", qa, qf), f"{qf}.answer"),
                )
            )
        seeds.append(KnowledgeSeed(context=context, qa=tuple(pairs)))
    return tuple(seeds)


def _documents(node: yaml.Node, leaf_dir: Path, root: Path) -> tuple[tuple[Document, ...], str]:
    m = _mapping(node, "document")
    repo_node = _need(m, "repo", node, "document")
    repo = _text(repo_node, "document.repo")
    if "://" in repo or repo.startswith("git@"):
        raise _LeafError(
            _line(repo_node),
            "document.repo: remote repositories are not fetched; clone it and give a local path",
        )
    commit = _opt_text(m, "commit", "document")
    patterns = [
        _text(p, f"document.patterns[{i}]")
        for i, p in enumerate(_seq(_need(m, "patterns", node, "document"), "document.patterns"))
    ]
    candidates = [Path(repo)] if os.path.isabs(repo) else [leaf_dir / repo, root / repo]
    base = next((c for c in candidates if c.is_dir()), None)
    if base is None:
        raise _LeafError(_line(repo_node), f"document.repo: directory {repo!r} not found")
    docs: dict[Path, None] = {}
    for i, pattern in enumerate(patterns):
        matched = sorted(p for p in base.glob(pattern) if p.is_file())
        if not matched:
            raise _LeafError(
                _line(m["patterns"].value[i]),
                f"document.patterns[{i}]: {pattern!r} matches no file in {repo!r}",
            )
        for p in matched:
            if p.suffix.lower() not in _DOC_SUFFIXES:
                raise _LeafError(
                    _line(m["patterns"].value[i]),
                    f"document.patterns[{i}]: {p.name!r} is not a Markdown file",
                )
            docs.setdefault(p, None)
    out: list[Document] = []
    for p in sorted(docs):
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _LeafError(_line(repo_node), f"document: cannot read {p.name!r} ({exc})") from exc
        name = Path(os.path.relpath(p.resolve(), root.resolve())).as_posix()
        out.append(Document(name=name, text=text))
    return tuple(out), commit


def read_leaf(path: Path, root: Path) -> Leaf:
    """Read and validate one ``qna.yaml`` at ``path`` inside the taxonomy ``root``.

    Raises:
        InputError: the leaf is malformed; ``line`` and the reason name the field.
    """
    rel = path.relative_to(root)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the leaf ({exc})", path=str(rel)) from exc
    try:
        doc = yaml.compose(text, Loader=yaml.SafeLoader)
        if doc is None:
            raise _LeafError(1, "the file is empty")
        top = _mapping(doc, "qna.yaml")
        version_node = _need(top, "version", doc, "qna.yaml")
        if not isinstance(version_node, yaml.ScalarNode) or version_node.value.strip() != "3":
            raise _LeafError(_line(version_node), "version: only version 3 is supported")
        kind_root = _kind_root(rel)
        if not kind_root:
            raise _LeafError(
                1,
                "leaf is not under knowledge/, compositional_skills/ or foundational_skills/",
            )
        created_by = _opt_text(top, "created_by", "qna.yaml")
        leaf_path = rel.parent.as_posix()
        if kind_root == _KNOWLEDGE_ROOT:
            domain = _text(_need(top, "domain", doc, "qna.yaml"), "domain")
            outline = _text(_need(top, "document_outline", doc, "qna.yaml"), "document_outline")
            kseeds = _knowledge_seeds(_need(top, "seed_examples", doc, "qna.yaml"))
            documents, commit = _documents(
                _need(top, "document", doc, "qna.yaml"), path.parent, root
            )
            return Leaf(
                path=leaf_path,
                file=rel.as_posix(),
                kind="knowledge",
                created_by=created_by,
                domain=domain,
                document_outline=outline,
                knowledge_seeds=kseeds,
                documents=documents,
                commit=commit,
            )
        task = _text(_need(top, "task_description", doc, "qna.yaml"), "task_description")
        sseeds = _skill_seeds(_need(top, "seed_examples", doc, "qna.yaml"))
        return Leaf(
            path=leaf_path,
            file=rel.as_posix(),
            kind="grounded_skill" if sseeds[0].context else "freeform_skill",
            created_by=created_by,
            task_description=task,
            skill_seeds=sseeds,
        )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        raise InputError(
            f"not valid YAML: {exc.problem or exc.context}", path=str(rel), line=line
        ) from exc
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", path=str(rel)) from exc
    except _LeafError as exc:
        raise InputError(exc.reason, path=str(rel), line=exc.line) from exc


def find_leaves(root: Path) -> list[Path]:
    """Every ``qna.yaml`` under ``root``, walked in sorted order (hidden dirs skipped)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if LEAF_NAME in filenames:
            found.append(Path(dirpath) / LEAF_NAME)
    return found


def read_taxonomy(root: Path) -> Iterator[Leaf | BadInput]:
    """Each leaf under ``root`` (sorted), validated; a malformed one as a BadInput.

    Raises:
        InputError: ``root`` is not a directory or holds no leaf.
    """
    if not root.is_dir():
        raise InputError("taxonomy is not a directory", path=str(root))
    leaves = find_leaves(root)
    if not leaves:
        raise InputError(f"taxonomy holds no {LEAF_NAME} leaf", path=str(root))
    for index, path in enumerate(leaves):
        try:
            yield read_leaf(path, root)
        except InputError as exc:
            rel = path.relative_to(root)
            line = getattr(exc, "line", None)
            yield BadInput(
                index=index,
                key=rel.parent.as_posix(),
                source=f"{rel.as_posix()}:{line}" if line else rel.as_posix(),
                reason=str(getattr(exc, "reason", exc)),
            )
