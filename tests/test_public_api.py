"""The public API is exactly ``engine.__all__``, sorted, and every module declares ``__all__``."""

from __future__ import annotations
import __future__

import importlib
from pathlib import Path

import engine

ENGINE = Path(engine.__file__).resolve().parent


def test_all_is_sorted_and_complete() -> None:
    assert list(engine.__all__) == sorted(engine.__all__)
    public = {
        n
        for n, v in vars(engine).items()
        if not n.startswith("_") and not isinstance(v, __future__._Feature)
    }
    modules = {n for n, v in vars(engine).items() if type(v).__name__ == "module"}
    assert set(engine.__all__) - {"__version__"} == public - modules


def test_every_module_declares_all() -> None:
    for path in ENGINE.rglob("*.py"):
        if path.name == "__main__.py":
            continue
        rel = path.relative_to(ENGINE.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        mod = importlib.import_module(name)
        assert isinstance(getattr(mod, "__all__", None), tuple), f"{name} has no __all__ tuple"
        for attr in mod.__all__:
            assert hasattr(mod, attr), f"{name}.__all__ names missing {attr}"
