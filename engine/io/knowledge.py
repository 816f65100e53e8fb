"""Knowledge documents as InstructLab names them: a git repository, a commit, patterns.

A knowledge leaf's ``document: {repo, commit, patterns}`` is resolved like SDG does it
(``instructlab.sdg.utils.taxonomy._get_documents``: clone, check out the commit, glob the
patterns, keep ``.md`` and ``.pdf`` files), with what an offline user needs on top:

* ``repo`` may be a URL (``https://``, ``ssh://``, ``git@``, ``file://``) or a local path
  (absolute, else relative to the leaf's directory, else to the taxonomy root);
* ``mirrors`` maps a repository URL to a local clone or another URL (an air-gapped
  machine maps ``https://github.com/org/docs`` to ``/srv/mirrors/docs``);
* the repository is cloned with the real ``git`` CLI (every call bounded by
  ``timeout_s``) into ``cache_dir/<hash of the source>-<commit>`` and checked out at the
  pinned commit there. A user's own clone is never read at whatever commit it is on: its
  objects are cloned and the pinned commit checked out in the cache; a commit it lacks is
  an error saying so;
* a plain directory that is not a git repository is read as it is, with a warning that
  the commit cannot be checked (this engine's own sample taxonomy does that).

Markdown is read as text; PDF through pypdf (pure Python; InstructLab's docling needs
layout models downloaded from a model hub at run time, which an offline run cannot do).

Chunking follows SDG's hybrid chunker: the document is split at its structure (headings,
paragraphs, code blocks), consecutive blocks under the same headings are merged up to the
budget (``chunk_word_count`` words, SDG's knob), a block over the budget is split at line
and then word boundaries, and every chunk starts with the headings it sits under.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from ..errors import InputError
from .taxonomy import Document, DocumentSource, Leaf

__all__ = (
    "DOCUMENT_SUFFIXES",
    "KnowledgeSettings",
    "checkout",
    "chunk_markdown",
    "load_documents",
    "read_document",
    "resolve_documents",
)

DOCUMENT_SUFFIXES = (".md", ".pdf")
_REMOTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.I)


class KnowledgeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how knowledge repositories are fetched.

    Attributes:
        cache_dir: checkouts live here, one directory per (source, commit).
        mirrors: repository URL -> local path or URL to fetch it from instead.
        timeout_s: bound of every git command.
    """

    cache_dir: Path
    mirrors: dict[str, str] = msgspec.field(default_factory=dict)
    timeout_s: float = 300.0


def _norm_url(url: str) -> str:
    url = url.strip().rstrip("/")
    return url[:-4] if url.endswith(".git") else url


def _git(args: list[str], *, cwd: Path | None, timeout: float, what: str) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
    except FileNotFoundError as exc:
        raise InputError("git is not installed; knowledge documents need the git CLI") from exc
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"{what}: git {args[0]} timed out after {timeout:g} s") from exc
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise InputError(f"{what}: git {args[0]} failed: {err[-1] if err else proc.returncode}")
    return proc.stdout.strip()


def _is_git_repo(path: Path) -> bool:
    return (path / ".git").exists() or ((path / "HEAD").is_file() and (path / "objects").is_dir())


def _locate(source: DocumentSource, leaf_dir: Path, root: Path, mirrors: dict[str, str]) -> str:
    """The place to fetch from: a mirror, a URL or an absolute local path."""
    repo = source.repo
    mapped = mirrors.get(repo) or {_norm_url(k): v for k, v in mirrors.items()}.get(_norm_url(repo))
    if mapped is not None:
        repo = mapped
    if _REMOTE.match(repo):
        return repo
    path = Path(os.path.expanduser(repo))
    candidates = [path] if path.is_absolute() else [leaf_dir / path, root / path]
    for cand in candidates:
        if cand.is_dir():
            return str(cand.resolve())
    raise InputError(
        f"document.repo: directory {repo!r} not found (absolute, or relative to the leaf or "
        "the taxonomy root)"
    )


def checkout(src: str, commit: str, settings: KnowledgeSettings, *, what: str) -> Path:
    """A checkout of ``src`` at ``commit`` in the cache (made on first use).

    Raises:
        InputError: git failed (with its message), the commit does not exist there, or
            the fetch timed out.
    """
    key = hashlib.sha256(src.encode("utf-8")).hexdigest()[:16]
    target = settings.cache_dir / f"{key}-{re.sub(r'[^0-9A-Za-z]', '_', commit)[:40]}"
    t = settings.timeout_s
    if target.is_dir() and _is_git_repo(target):
        head = _git(["rev-parse", "HEAD"], cwd=target, timeout=t, what=what)
        if head.startswith(commit.lower()):
            return target
        shutil.rmtree(target)  # an interrupted or tampered checkout: make it again
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=settings.cache_dir))
    try:
        _git(
            ["clone", "--quiet", "--no-checkout", src, str(tmp / "repo")],
            cwd=None,
            timeout=t,
            what=what,
        )
        work = tmp / "repo"
        try:
            full = _git(
                ["rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                cwd=work,
                timeout=t,
                what=what,
            )
        except InputError as exc:
            raise InputError(
                f"{what}: commit {commit!r} is not in {src} (pin a commit that exists there, "
                "or fetch it into your clone/mirror)"
            ) from exc
        _git(["checkout", "--quiet", "--detach", full], cwd=work, timeout=t, what=what)
        os.replace(work, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def read_document(path: Path, name: str) -> str:
    """Text of a Markdown or PDF document.

    Raises:
        InputError: unreadable, not UTF-8 Markdown, or a PDF pypdf cannot read.
    """
    if path.suffix.lower() == ".pdf":
        try:
            from pypdf import PdfReader
            from pypdf.errors import PyPdfError

            reader = PdfReader(path)
            pages = [(page.extract_text() or "").strip() for page in reader.pages]
        except (OSError, PyPdfError, ValueError) as exc:
            raise InputError(f"cannot read PDF {name!r} ({exc})") from exc
        text = "\n\n".join(p for p in pages if p)
        if not text:
            raise InputError(f"PDF {name!r} has no extractable text (scanned pages need OCR)")
        return text
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {name!r} ({exc})") from exc


def resolve_documents(
    source: DocumentSource,
    *,
    leaf_dir: Path,
    root: Path,
    settings: KnowledgeSettings,
    warn: Callable[[str], None] | None = None,
) -> tuple[Path, list[Path]]:
    """The checkout directory and the document files the patterns match (sorted).

    Raises:
        InputError: the repository cannot be fetched or the patterns match no document.
    """
    what = f"document.repo {source.repo!r}"
    src = _locate(source, leaf_dir, root, settings.mirrors)
    local = Path(src) if not _REMOTE.match(src) else None
    if local is not None and not _is_git_repo(local):
        if warn is not None:
            warn(
                f"{what}: {src} is a plain directory, not a git repository; documents are read "
                f"as they are and commit {source.commit!r} is not checked"
            )
        base = local
    else:
        base = checkout(src, source.commit, settings, what=what)
    found: dict[Path, None] = {}
    for pattern in source.patterns:
        for hit in sorted(glob.glob(os.path.join(glob.escape(str(base)), pattern), recursive=True)):
            p = Path(hit)
            if p.is_file() and p.suffix.lower() in DOCUMENT_SUFFIXES and ".git" not in p.parts:
                found.setdefault(p, None)
    if not found:
        raise InputError(
            f"document.patterns {list(source.patterns)} match no .md or .pdf file in "
            f"{source.repo} at {source.commit}"
        )
    return base, sorted(found)


def load_documents(
    leaf: Leaf,
    root: Path,
    settings: KnowledgeSettings,
    *,
    warn: Callable[[str], None] | None = None,
) -> Leaf:
    """``leaf`` with its documents read (skills are returned unchanged).

    Raises:
        InputError: naming the leaf file and the ``document`` line.
    """
    if leaf.source is None:
        return leaf
    try:
        base, files = resolve_documents(
            leaf.source,
            leaf_dir=root / leaf.path,
            root=root,
            settings=settings,
            warn=warn,
        )
        docs = tuple(
            Document(name=f.relative_to(base).as_posix(), text=read_document(f, f.name))
            for f in files
        )
    except InputError as exc:
        raise InputError(exc.reason, path=leaf.file, line=leaf.source.line) from exc
    return msgspec.structs.replace(leaf, documents=docs, commit=leaf.source.commit)


# -------------------------------------------------------------------- chunking
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def _blocks(text: str) -> Iterator[tuple[tuple[str, ...], str]]:
    """(heading path, block) pairs: paragraphs, list runs and whole fenced code blocks."""
    headings: list[tuple[int, str]] = []
    buf: list[str] = []
    fence: str | None = None

    def flush() -> Iterator[tuple[tuple[str, ...], str]]:
        block = "\n".join(buf).strip("\n")
        buf.clear()
        if block.strip():
            yield tuple(h for _, h in headings), block

    for line in text.splitlines():
        line = line.rstrip()
        m = _FENCE.match(line)
        if fence is not None:
            buf.append(line)
            if m and m.group(1) == fence:
                fence = None
                yield from flush()
            continue
        if m:
            yield from flush()
            fence = m.group(1)
            buf.append(line)
            continue
        h = _HEADING.match(line)
        if h:
            yield from flush()
            level = len(h.group(1))
            headings = [x for x in headings if x[0] < level] + [(level, line.strip())]
            continue
        if not line.strip():
            yield from flush()
            continue
        buf.append(line)
    yield from flush()


def _words(text: str) -> int:
    return len(text.split())


def _split_block(block: str, budget: int) -> list[str]:
    """A block over the budget: split at line boundaries, then at word boundaries."""
    parts: list[str] = []
    cur: list[str] = []
    n = 0
    for line in block.split("\n"):
        w = _words(line)
        if w > budget:
            if cur:
                parts.append("\n".join(cur))
                cur, n = [], 0
            words = line.split()
            parts.extend(" ".join(words[i : i + budget]) for i in range(0, len(words), budget))
            continue
        if cur and n + w > budget:
            parts.append("\n".join(cur))
            cur, n = [], 0
        cur.append(line)
        n += w
    if cur:
        parts.append("\n".join(cur))
    return parts


def chunk_markdown(text: str, words: int) -> list[str]:
    """Structure-aware chunks of at most ``words`` words of body text each.

    Blocks under the same headings are merged up to the budget; every chunk starts with
    the headings it sits under (not counted in the budget); paragraph breaks and code
    indentation are kept. An empty text gives no chunk.
    """
    if words < 1:
        raise ValueError("chunk size must be >= 1")
    chunks: list[str] = []
    cur_head: tuple[str, ...] | None = None
    cur: list[str] = []
    n = 0

    def emit() -> None:
        nonlocal cur, n
        if cur:
            head = "\n".join(cur_head or ())
            body = "\n\n".join(cur)
            chunks.append(f"{head}\n\n{body}" if head else body)
        cur, n = [], 0

    for head, block in _blocks(text):
        if head != cur_head:
            emit()
            cur_head = head
        pieces = _split_block(block, words) if _words(block) > words else [block]
        for piece in pieces:
            w = _words(piece)
            if cur and n + w > words:
                emit()
            cur.append(piece)
            n += w
    emit()
    return chunks
