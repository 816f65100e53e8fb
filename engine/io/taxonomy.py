"""InstructLab taxonomy reader: a directory tree whose leaves are ``qna.yaml`` files.

A leaf is accepted or refused exactly as InstructLab's data generation does it
(``instructlab-sdg`` reads every leaf with ``instructlab-schema``'s ``TaxonomyParser``,
the schema version taken from the file, yamllint warnings counted as errors, and a file
with any warning or error left out). The rules are instructlab-schema's own, applied here
in process (so a 150-leaf taxonomy reads in well under a second and every problem gets
the line of the offending node):

1. the YAML must parse and be a mapping (an empty file is refused, as InstructLab warns);
2. ``version`` (absent: 1) picks the schema ``v{version}/{compositional_skills,knowledge}.json``
   shipped in the ``instructlab-schema`` package; the schema name is the leaf's first
   path component (anything else: ``knowledge`` when there is a ``document`` block);
3. versions 2 and up are linted with yamllint, with instructlab-schema's configuration
   (``relaxed``, no line-length rule), warnings being errors as in SDG;
4. a deprecated schema (knowledge versions 1 and 2) refuses the leaf with its message;
5. JSON-schema validation (required keys, types, ``minItems``: 5 skill seeds, 5 knowledge
   contexts of 3 questions each, unique items, no unknown keys).

Which files are leaves is SDG's rule too: a file named exactly ``qna.yaml`` whose first
path component is ``compositional_skills`` or ``knowledge``. ``foundational_skills/`` is
not read by InstructLab's data generation; its leaves are skipped with a warning (or read
as compositional skills with ``foundational_skills = true``). A ``qna.yml`` (or another
case of the name) is reported, never silently ignored.

Knowledge leaves name their documents by git ``repo``, ``commit`` and ``patterns``;
:mod:`engine.io.knowledge` fetches and chunks them. A leaf is a *grounded* skill when its
first seed has a ``context`` (SDG picks the pipeline from the first seed the same way).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import msgspec
import yaml

from ..errors import InputError
from ..jsontypes import JSONObject
from ..records import BadInput

__all__ = (
    "LEAF_NAME",
    "Document",
    "DocumentSource",
    "KnowledgeSeed",
    "Leaf",
    "LeafKind",
    "Problem",
    "SkillSeed",
    "TaxonomyScan",
    "check_leaf",
    "find_leaves",
    "read_leaf",
    "read_taxonomy",
)

LeafKind = Literal["freeform_skill", "grounded_skill", "knowledge"]

LEAF_NAME = "qna.yaml"
SDG_ROOTS = ("compositional_skills", "knowledge")
FOUNDATIONAL = "foundational_skills"
YAMLLINT_CONFIG = "{extends: relaxed, rules: {line-length: disable}}"
"""instructlab-schema's ``DEFAULT_YAMLLINT_CONFIG`` (kept in step by a test)."""

_Loader: type[yaml.CSafeLoader] | type[yaml.SafeLoader] = getattr(
    yaml, "CSafeLoader", yaml.SafeLoader
)


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong (or worth a warning) in an input file.

    Attributes:
        file: the file, relative to the input root.
        line: 1-based line, when known.
        message: what is wrong and, where it helps, what to do.
    """

    file: str
    line: int | None
    message: str


class SkillSeed(msgspec.Struct, frozen=True, kw_only=True):
    """One skill seed example (``context`` is empty for freeform skills)."""

    question: str
    answer: str
    context: str = ""


class KnowledgeSeed(msgspec.Struct, frozen=True, kw_only=True):
    """One knowledge seed example: a context and its question/answer pairs."""

    context: str
    qa: tuple[tuple[str, str], ...]


class DocumentSource(msgspec.Struct, frozen=True, kw_only=True):
    """A knowledge leaf's ``document`` block.

    Attributes:
        repo: git repository: a URL (``https://``, ``file://``, ``git@``) or a local path.
        commit: the pinned commit.
        patterns: glob patterns of the documents inside the repository.
        line: line of the ``document`` key in the leaf.
    """

    repo: str
    commit: str
    patterns: tuple[str, ...]
    line: int = 1


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """A knowledge document: its path inside its repository and its text."""

    name: str
    text: str


class Leaf(msgspec.Struct, frozen=True, kw_only=True):
    """A validated taxonomy leaf.

    Attributes:
        path: the leaf's directory relative to the taxonomy root (POSIX), e.g.
            ``compositional_skills/writing/freeform/haiku``; its stable identity.
        file: the ``qna.yaml`` path relative to the taxonomy root.
        kind: ``freeform_skill``, ``grounded_skill`` or ``knowledge``.
        version: the leaf's schema version (1 when the file has no ``version``).
        created_by: the author field.
        task_description: skills' task description (knowledge: empty).
        domain: knowledge domain (skills: empty).
        document_outline: knowledge document outline (skills: empty).
        skill_seeds: skills' seed examples.
        knowledge_seeds: knowledge seed examples.
        source: a knowledge leaf's ``document`` block.
        documents: knowledge documents (filled by :mod:`engine.io.knowledge`).
        commit: the commit the documents were read at.
    """

    path: str
    file: str
    kind: LeafKind
    version: int = 3
    created_by: str = ""
    task_description: str = ""
    domain: str = ""
    document_outline: str = ""
    skill_seeds: tuple[SkillSeed, ...] = ()
    knowledge_seeds: tuple[KnowledgeSeed, ...] = ()
    source: DocumentSource | None = None
    documents: tuple[Document, ...] = ()
    commit: str = ""

    @property
    def phase(self) -> str:
        """Training phase: ``knowledge`` or ``skills``."""
        return "knowledge" if self.kind == "knowledge" else "skills"


# ------------------------------------------------------------------ schema rules
class _SchemaError(Protocol):
    """What is read of a ``jsonschema.ValidationError``."""

    message: str
    validator: object
    validator_value: object
    path: Iterable[str | int]
    absolute_path: Iterable[str | int]


class _SchemaValidator(Protocol):
    """What is used of a ``jsonschema`` validator."""

    def iter_errors(self, instance: object) -> Iterable[_SchemaError]: ...


@functools.cache
def _validator(version: int, schema_name: str) -> tuple[_SchemaValidator | None, str | None]:
    """(jsonschema validator, deprecation message) of one instructlab-schema file.

    Raises:
        FileNotFoundError: no such schema version.
    """
    from instructlab.schema import schema_base
    from jsonschema.validators import validator_for
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    base = schema_base().joinpath(f"v{version}")

    def load(name: str) -> JSONObject:
        path = base.joinpath(name)
        if not path.is_file():
            raise FileNotFoundError(f"v{version}/{name}")
        loaded: JSONObject = json.loads(path.read_text(encoding="utf-8"))
        return loaded

    def retrieve(uri: str) -> object:
        return Resource.from_contents(load(uri), default_specification=DRAFT202012)

    schema = load(f"{schema_name}.json")
    if schema.get("deprecated"):
        return None, str(
            schema.get("description") or f"{schema_name} schema version {version} is deprecated"
        )
    registry = Registry(retrieve=retrieve)  # type: ignore[call-arg]
    validator: _SchemaValidator = validator_for(schema)(schema, registry=registry)
    return validator, None


@functools.cache
def _yamllint_config() -> object:
    from yamllint.config import YamlLintConfig

    return YamlLintConfig(YAMLLINT_CONFIG)


def _node_line(node: yaml.Node | None, path: tuple[str | int, ...]) -> int | None:
    """Line of the node at ``path`` (keys and indices) in a composed YAML tree."""
    line = int(node.start_mark.line) + 1 if node is not None else None
    for part in path:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            hit = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if hit is None:
                return line
            key_node = next(k for k, v in node.value if v is hit)
            line, node = int(key_node.start_mark.line) + 1, hit
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = int(node.start_mark.line) + 1
        else:
            return line
    return line


def _lint(text: str, rel: str) -> list[Problem]:
    from yamllint import linter

    return [
        Problem(rel, int(p.line), f"yamllint {p.level}: {p.message}")
        for p in linter.run(text, _yamllint_config())
    ]


def _schema_name(rel: Path, contents: Mapping[str, object]) -> str:
    first = rel.parts[0] if rel.parts else ""
    if first in SDG_ROOTS:
        return first
    return "knowledge" if "document" in contents else "compositional_skills"


def _version(contents: Mapping[str, object]) -> int:
    raw = contents.get("version", 1)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if not isinstance(raw, str | float):
        return 1  # the schema then reports the type, as instructlab-schema does
    try:
        return int(raw)
    except ValueError:
        return 1  # the schema then reports the type, as instructlab-schema does


def check_leaf(path: Path, root: Path) -> tuple[dict[str, Any] | None, int, list[Problem]]:
    """Validate one leaf file with instructlab-schema's rules.

    Returns:
        (contents, version, problems): contents is None when the file does not parse
        into a mapping; the leaf is usable only when problems is empty.
    """
    rel_path = path.relative_to(root)
    rel = rel_path.as_posix()
    if path.name != LEAF_NAME:
        msg = f'taxonomy files must be named "{LEAF_NAME}"; "{path.name}" is not read'
        return None, 0, [Problem(rel, None, msg)]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, 0, [Problem(rel, None, f"cannot read the leaf ({exc})")]
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            contents = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = int(mark.line) + 1 if mark is not None else None
        return None, 0, [Problem(rel, line, f"not valid YAML: {exc.problem or exc.context}")]
    except yaml.YAMLError as exc:
        return None, 0, [Problem(rel, None, f"not valid YAML: {exc}")]
    if not contents:
        return None, 0, [Problem(rel, 1, "the file is empty (InstructLab leaves it out)")]
    if not isinstance(contents, dict):
        msg = "not valid: the top-level element is not an object with key-value pairs"
        return None, 0, [Problem(rel, 1, msg)]
    version = _version(contents)
    problems: list[Problem] = []
    if version > 1:
        problems.extend(_lint(text, rel))
    name = _schema_name(rel_path, contents)
    try:
        validator, deprecated = _validator(version, name)
    except FileNotFoundError:
        problems.append(
            Problem(
                rel,
                _node_line(node, ("version",)),
                f"version {version}: no {name} schema of that version in instructlab-schema "
                "(supported: 1, 2, 3)",
            )
        )
        return contents, version, problems
    if deprecated is not None:
        problems.append(Problem(rel, _node_line(node, ("version",)), deprecated))
        return contents, version, problems
    assert validator is not None  # None only with a deprecation message
    errors = sorted(validator.iter_errors(contents), key=lambda e: list(map(str, e.path)))
    for err in errors:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        if err.validator == "minItems":
            msg = f"{where}: must have at least {err.validator_value} items"
        else:
            msg = f"{where}: {err.message[-200:]}"
        problems.append(Problem(rel, _node_line(node, tuple(err.absolute_path)), msg))
    return contents, version, problems


# ------------------------------------------------------------------ leaf building
def _clean(value: object) -> str:
    return str(value).strip()


def _leaf(rel: Path, contents: dict[str, Any], version: int, node_line: int) -> Leaf:
    kind_root = _schema_name(rel, contents)
    leaf_path = rel.parent.as_posix()
    created_by = _clean(contents.get("created_by", ""))
    if kind_root == "knowledge":
        kseeds = tuple(
            KnowledgeSeed(
                context=_clean(s["context"]),
                qa=tuple(
                    (_clean(qa["question"]), _clean(qa["answer"]))
                    for qa in s["questions_and_answers"]
                ),
            )
            for s in contents["seed_examples"]
        )
        doc = contents["document"]
        return Leaf(
            path=leaf_path,
            file=rel.as_posix(),
            kind="knowledge",
            version=version,
            created_by=created_by,
            domain=_clean(contents["domain"]),
            document_outline=_clean(contents.get("document_outline", "")),
            knowledge_seeds=kseeds,
            source=DocumentSource(
                repo=_clean(doc["repo"]),
                commit=_clean(doc["commit"]),
                patterns=tuple(_clean(p) for p in doc["patterns"]),
                line=node_line,
            ),
        )
    seeds = tuple(
        SkillSeed(
            question=_clean(s["question"]),
            answer=_clean(s["answer"]),
            context=_clean(s.get("context", "")),
        )
        for s in contents["seed_examples"]
    )
    return Leaf(
        path=leaf_path,
        file=rel.as_posix(),
        kind="grounded_skill" if seeds[0].context else "freeform_skill",
        version=version,
        created_by=created_by,
        task_description=_clean(contents.get("task_description", "")),
        skill_seeds=seeds,
    )


def read_leaf(path: Path, root: Path) -> Leaf:
    """Read and validate one ``qna.yaml`` at ``path`` inside the taxonomy ``root``.

    Raises:
        InputError: the leaf is refused; ``line`` and the reason name the first problem.
    """
    contents, version, problems = check_leaf(path, root)
    rel = path.relative_to(root)
    if problems or contents is None:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise InputError(first.message + more, path=rel.as_posix(), line=first.line)
    doc_line = 1
    if "document" in contents:
        doc_line = _document_line(path)
    return _leaf(rel, contents, version, doc_line)


def _document_line(path: Path) -> int:
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("document:"):
            return n
    return 1


class TaxonomyScan(msgspec.Struct):
    """What the walk found.

    Attributes:
        leaves: the leaf files to read, in sorted order.
        notes: files that are not read and why (wrong name, root InstructLab ignores).
    """

    leaves: list[Path]
    notes: list[Problem]


def find_leaves(root: Path, *, foundational_skills: bool = False) -> TaxonomyScan:
    """The leaves under ``root``, walked in sorted order (hidden directories skipped),
    with a note for every ``qna.yaml``-like file that is not read."""
    scan = TaxonomyScan(leaves=[], notes=[])
    roots = SDG_ROOTS + ((FOUNDATIONAL,) if foundational_skills else ())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.casefold() not in ("qna.yaml", "qna.yml"):
                continue
            path = Path(dirpath) / name
            rel = path.relative_to(root)
            first = rel.parts[0] if len(rel.parts) > 1 else ""
            if name != LEAF_NAME:
                scan.notes.append(
                    Problem(
                        rel.as_posix(),
                        None,
                        f'not read: taxonomy files must be named "{LEAF_NAME}" '
                        f"(InstructLab does not read {name!r}); rename it",
                    )
                )
            elif first == FOUNDATIONAL and not foundational_skills:
                scan.notes.append(
                    Problem(
                        rel.as_posix(),
                        None,
                        "skipped: InstructLab's data generation reads only "
                        "compositional_skills/ and knowledge/ (set "
                        "[method.lab] foundational_skills = true to read it as a skill)",
                    )
                )
            elif first not in roots:
                scan.notes.append(
                    Problem(
                        rel.as_posix(),
                        None,
                        "skipped: not under compositional_skills/ or knowledge/ "
                        "(InstructLab does not read it)",
                    )
                )
            else:
                scan.leaves.append(path)
    return scan


def read_taxonomy(
    root: Path,
    *,
    foundational_skills: bool = False,
    on_note: Callable[[Problem], None] | None = None,
) -> Iterator[Leaf | BadInput]:
    """Each leaf under ``root`` (sorted), validated; a refused one as a BadInput.

    Args:
        root: the taxonomy directory.
        foundational_skills: read ``foundational_skills/`` leaves as compositional skills.
        on_note: called with each file that is not read (see :func:`find_leaves`).

    Raises:
        InputError: ``root`` is not a directory or holds no leaf.
    """
    if not root.is_dir():
        raise InputError("taxonomy is not a directory (check run.input)", path=str(root))
    scan = find_leaves(root, foundational_skills=foundational_skills)
    for note in scan.notes:
        if on_note is not None:
            on_note(note)
    if not scan.leaves:
        raise InputError(
            f"taxonomy holds no {LEAF_NAME} leaf under compositional_skills/ or knowledge/",
            path=str(root),
        )
    for index, path in enumerate(scan.leaves):
        try:
            yield read_leaf(path, root)
        except InputError as exc:
            rel = path.relative_to(root)
            yield BadInput(
                index=index,
                key=rel.parent.as_posix(),
                source=f"{rel.as_posix()}:{exc.line}" if exc.line else rel.as_posix(),
                reason=exc.reason,
            )
