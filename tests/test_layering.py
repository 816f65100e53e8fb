"""Dependencies point down: parse every engine module's imports and check the allowed edges."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"

# module (or package prefix) -> engine modules it may import (prefix match).
ALLOWED: dict[str, tuple[str, ...]] = {
    "engine.errors": (),
    "engine.clock": (),
    "engine.records": (),
    "engine.jsontypes": (),
    "engine.serving": (),
    "engine.redaction": (),
    "engine.version": (),
    "engine.prices": (),
    "engine.config": ("engine.config", "engine.errors", "engine.redaction", "engine.prices"),
    "engine.llm": ("engine.llm", "engine.errors", "engine.clock", "engine.redaction"),
    "engine.io": (
        "engine.io",
        "engine.errors",
        "engine.clock",
        "engine.records",
        "engine.redaction",
    ),
    "engine.metrics": ("engine.metrics", "engine.clock", "engine.redaction", "engine.records"),
    "engine.metrics.prometheus": (
        "engine.metrics",
        "engine.clock",
        "engine.errors",
        "engine.serving",
    ),
    "engine.sim": ("engine.sim", "engine.llm.wire", "engine.clock", "engine.serving"),
    "engine.stages": ("engine.errors",),
    "engine.dedup": (
        "engine.dedup",
        "engine.config",
        "engine.errors",
        "engine.io",
        "engine.records",
    ),
    "engine.methods": (
        "engine.methods",
        "engine.dedup",
        "engine.stages",
        "engine.records",
        "engine.config",
        "engine.errors",
        "engine.io",
        "engine.filters",
        "engine.clock",
    ),
    "engine.filters": (),
    "engine.scheduler": (
        "engine.errors",
        "engine.records",
        "engine.methods.base",
        "engine.metrics",
    ),
    "engine.bench": ("engine.bench", "engine.llm", "engine.errors", "engine.version"),
    # The viewer reads outputs (io) and the run's status file; it serves with serving.
    "engine.viewer": (
        "engine.viewer",
        "engine.io",
        "engine.errors",
        "engine.serving",
        "engine.metrics.status",
    ),
    # The composition root may use everything below it, including the in-process sim.
    "engine.api": (
        "engine.api",
        "engine.config",
        "engine.errors",
        "engine.io",
        "engine.llm",
        "engine.methods",
        "engine.metrics",
        "engine.scheduler",
        "engine.sim",
        "engine.records",
        "engine.clock",
        "engine.redaction",
        "engine.prices",
        "engine.version",
    ),
    # The estimate drives a whole Engine on simulated endpoints.
    "engine.estimate": (
        "engine.api",
        "engine.config",
        "engine.errors",
        "engine.methods",
        "engine.prices",
    ),
    # Export reads outputs (io) and turns rows into conversations the way the methods
    # build their own training sets (LAB's SDG sample, Humpback's tags).
    "engine.export": (
        "engine.export",
        "engine.io",
        "engine.errors",
        "engine.methods.backtranslation.prompts",
        "engine.methods.lab.mix",
    ),
    "engine.cli": ("engine",),
    "engine.__main__": ("engine.cli",),
    # Scale-out: drives whole Engines; imports Ray only at run time.
    "engine.distributed": (
        "engine.distributed",
        "engine.api",
        "engine.config",
        "engine.errors",
        "engine.io",
        "engine.llm",
        "engine.methods",
        "engine.clock",
        "engine.version",
    ),
    "engine": (
        "engine.api",
        "engine.config",
        "engine.errors",
        "engine.methods.custom",
        "engine.records",
        "engine.version",
    ),
}


# Bottom-layer modules of types only, which any module may import.
EVERYWHERE: tuple[str, ...] = ("engine.jsontypes",)


def _module_name(path: Path) -> str:
    rel = path.relative_to(ENGINE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    package = module if is_pkg else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("engine"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.startswith("engine"):
                if node.module is None or target == "engine":
                    found.update(f"{target}.{a.name}" for a in node.names)
                else:
                    found.add(target)
    return found


def _rule(module: str) -> tuple[str, ...]:
    best = ""
    for key in ALLOWED:
        if (module == key or module.startswith(key + ".")) and len(key) > len(best):
            best = key
    assert best, f"no layering rule for {module}"
    return ALLOWED[best]


def test_no_upward_imports() -> None:
    problems = []
    for path in sorted(ENGINE.rglob("*.py")):
        module = _module_name(path)
        allowed = _rule(module) + EVERYWHERE
        for target in _imports(path, module):
            if target == module:
                continue
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                problems.append(f"{module} imports {target}")
    assert not problems, "\n".join(problems)


def test_nothing_imports_cli() -> None:
    for path in ENGINE.rglob("*.py"):
        module = _module_name(path)
        if (
            module == "engine.__main__"
            or module == "engine.cli"
            or module.startswith("engine.cli.")
        ):
            continue
        imported = _imports(path, module)
        assert not any(t == "engine.cli" or t.startswith("engine.cli.") for t in imported), module
