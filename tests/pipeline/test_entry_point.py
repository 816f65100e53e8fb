"""A method that lives in its own installed package, registered under the entry-point group
``synth_engine.methods``, runs by its short name (``run.method = "shout"``) from the CLI,
with its ``[method.shout]`` table validated against its Config."""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.io.shards import iter_rows
from tests.conftest import run_cli

METHOD = """
from engine import Context, Item, Kept, Method, MethodConfig, TypedRow


class ShoutConfig(MethodConfig, frozen=True):
    suffix: str = "!"


class Shout(Method):
    name = "shout"
    Config = ShoutConfig
    required_fields = ("text",)

    async def process(self, item: Item, ctx: Context) -> list[TypedRow]:
        reply = await ctx.generate("strong", "Say it loud: {{text}}", item.data, stage="shout")
        return [Kept({"text": item.data["text"], "loud": str(reply).upper() + self.options.suffix})]
"""

CONFIG = """
[run]
method = "shout"
input = "lines.jsonl"
output = "out"

[endpoints.sim]
base_url = "sim"
model = "sim-model"
sim = { latency_ms = 1 }

[roles]
strong = "sim"

[method.shout]
suffix = "!!"
"""


def _install(site: Path) -> None:
    """An installed distribution ``shoutpkg`` as pip leaves it: its package and its
    ``.dist-info`` with the entry point (importlib.metadata finds it on sys.path)."""
    (site / "shoutpkg").mkdir(parents=True)
    (site / "shoutpkg" / "__init__.py").write_text("")
    (site / "shoutpkg" / "methods.py").write_text(METHOD)
    info = site / "shoutpkg-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shoutpkg\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[synth_engine.methods]\nshout = shoutpkg.methods:Shout\n"
    )


def test_a_method_from_an_installed_package_runs_by_its_entry_point_name(tmp_path: Path) -> None:
    site = tmp_path / "site"
    _install(site)
    (tmp_path / "lines.jsonl").write_text(
        '{"id": "a", "text": "hello"}\n{"id": "b", "text": "hi"}\n'
    )
    config = tmp_path / "shout.toml"
    config.write_text(CONFIG)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    proc = run_cli("run", str(config), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {row["item"]: row for row in iter_rows(tmp_path / "out", "kept")}
    assert set(rows) == {"a", "b"}
    assert all(row["loud"].endswith("!!") and row["loud"].isupper() for row in rows.values())
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["method"] == "shout" and set(report["stages"]) == {"shout"}

    typo = run_cli("validate", str(config), "--set", "method.shout.sufix=x", env=env)
    assert typo.returncode == 2 and "method.shout.sufix: unknown key" in typo.stderr
    absent = run_cli("validate", str(config))  # not installed: not found, and says how
    assert absent.returncode == 2 and "unknown method 'shout'" in absent.stderr
