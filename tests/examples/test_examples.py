"""Every example in examples/ runs on the simulated endpoint and writes the rows it should.

Each example is a peer's headline example (Curator, distilabel, NeMo Data Designer) written
as a synth-engine pipeline: TOML, or a short Python method. Their outputs are checked by
shape (rows per input, columns, values drawn from the declared sets), never by simulated
text. The line counts of docs/peers-examples.md are recounted here, and the peers' code
quoted in each example's README is checked against the copies in tests/examples/peers/.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, load_config
from engine.io.shards import KINDS, iter_rows
from examples.curator_poems.poems import Poet
from tests.conftest import ROOT, run_cli
from tests.examples.lines import count_files

EXAMPLES = ROOT / "examples"
PEERS = Path(__file__).resolve().parent / "peers"

Rows = list[dict[str, Any]]


def _input(example: str, name: str) -> list[dict[str, Any]]:
    lines = (EXAMPLES / example / name).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _texts(row: dict[str, Any], *columns: str) -> bool:
    return all(isinstance(row[c], str) and row[c] for c in columns)


def _curator_sentiment(rows: Rows, report: dict[str, Any]) -> None:
    products = {p["id"]: p for p in _input("curator_sentiment", "products.jsonl")}
    assert sorted(r["item"] for r in rows) == sorted(products)  # one row per product
    for row in rows:
        assert row["kind"] == "kept" and row["name"] == products[row["item"]]["name"]
        assert row["sentiment"] in {"positive", "negative", "neutral"}


def _curator_poems(rows: Rows, report: dict[str, Any]) -> None:
    subjects = {s["id"]: s["subject"] for s in _input("curator_poems", "subjects.jsonl")}
    by_item: dict[str, Rows] = defaultdict(list)
    for row in rows:
        by_item[row["item"]].append(row)
        assert row["kind"] == "kept" and row["subject"] == subjects[row["item"]]
        assert _texts(row, "topic", "title", "poem")
    assert set(by_item) == set(subjects)
    # One row per topic: as many as the poet was asked for.
    assert report["stages"]["topics"]["ok"] == len(subjects)
    assert report["stages"]["poem"]["ok"] == len(rows)


def _curator_recipes(rows: Rows, report: dict[str, Any]) -> None:
    cuisines = rows[0]["cuisines_list"]
    assert isinstance(cuisines, list) and cuisines
    assert sorted(r["cuisine"] for r in rows) == sorted(cuisines)  # one row per cuisine
    for row in rows:
        assert row["kind"] == "kept" and row["cuisines_list"] == cuisines
        assert _texts(row, "title")
        for column in ("ingredients", "instructions"):
            assert row[column] and all(isinstance(x, str) for x in row[column])
        for column in ("prep_time", "cook_time", "servings"):
            assert isinstance(row[column], int)
    # Each model answered its own stage: claude listed, gemini wrote the recipes.
    assert report["endpoints"]["claude"]["requests"] == 1
    assert report["endpoints"]["gemini"]["requests"] == len(rows)


def _distilabel_text_generation(rows: Rows, report: dict[str, Any]) -> None:
    records = _input("distilabel_text_generation", "instructions.jsonl")
    instructions = {i["id"]: i["instruction"] for i in records}
    assert sorted(r["item"] for r in rows) == sorted(instructions)
    for row in rows:
        assert row["kind"] == "kept" and row["instruction"] == instructions[row["item"]]
        assert _texts(row, "generation")


def _distilabel_preference(rows: Rows, report: dict[str, Any]) -> None:
    instructions = _input("distilabel_preference", "instructions.jsonl")
    assert sorted(r["item"] for r in rows) == sorted(i["id"] for i in instructions)
    models = ["meta-llama/Meta-Llama-3-8B-Instruct", "mistralai/Mixtral-8x7B-Instruct-v0.1"]
    for row in rows:
        assert row["generation_models"] == models and len(row["generations"]) == 2
        assert all(1 <= r <= 5 for r in row["ratings"])
        if row["kind"] == "rejected":  # a tie is no preference
            assert row["ratings"][0] == row["ratings"][1] and row["reason"].startswith("tie")
            continue
        assert row["chosen_rating"] > row["rejected_rating"]
        assert {row["chosen"], row["rejected"]} == set(row["generations"])
        assert row["chosen_model"] == models[row["generations"].index(row["chosen"])]
    assert report["endpoints"]["llama_70b"]["requests"] == 2 * len(rows)  # the judge


def _datadesigner_quickstart(rows: Rows, report: dict[str, Any]) -> None:
    assert len(rows) == 10 and all(r["kind"] == "kept" for r in rows)
    categories = {"Electronics", "Clothing", "Home & Kitchen", "Books"}
    for row in rows:
        assert row["product_category"] in categories and _texts(row, "review")
    assert len({r["product_category"] for r in rows}) > 1  # drawn per row


def _datadesigner_basics(rows: Rows, report: dict[str, Any]) -> None:
    assert len(rows) == 10 and all(r["kind"] == "kept" for r in rows)
    subcategories = {"Books": {"Fiction", "Non-Fiction", "Self-Help", "Textbooks", "Classics"}}
    for row in rows:
        assert row["target_age_range"] in {"18-25", "25-35", "35-50", "50-65", "65+"}
        if row["product_category"] in subcategories:
            assert row["product_subcategory"] in subcategories[row["product_category"]]
        assert isinstance(row["customer_age"], int) and 18 <= row["customer_age"] <= 70
        assert isinstance(row["number_of_stars"], int) and 1 <= row["number_of_stars"] <= 5
        assert _texts(row, "product_name", "customer_review")
    # The simulated endpoint's limit, learned from its x-ratelimit-* headers (the config
    # sets no rpm for the endpoint).
    assert report["endpoints"]["nvidia"]["rpm_limit"] == 3000


CHECKS: dict[str, Callable[[Rows, dict[str, Any]], None]] = {
    "curator_sentiment": _curator_sentiment,
    "curator_poems": _curator_poems,
    "curator_recipes": _curator_recipes,
    "distilabel_text_generation": _distilabel_text_generation,
    "distilabel_preference": _distilabel_preference,
    "datadesigner_quickstart": _datadesigner_quickstart,
    "datadesigner_basics": _datadesigner_basics,
}


def _rows(out: Path) -> Rows:
    return [{"kind": kind, **row} for kind in KINDS for row in iter_rows(out, kind)]


def _by_id(rows: Rows) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in rows}


def _ours(example: str) -> list[Path]:
    """Our files of an example: its config and any Python (not its input data)."""
    folder = EXAMPLES / example
    return sorted([*folder.glob("*.toml"), *folder.glob("*.py")])


def test_every_example_is_tested_documented_and_set_beside_its_peer() -> None:
    found = {p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert found == set(CHECKS)
    for example in CHECKS:
        assert (EXAMPLES / example / "README.md").is_file()
        assert (EXAMPLES / example / "config.toml").is_file()
        assert (PEERS / f"{example}.py.txt").is_file()


@pytest.mark.parametrize("example", sorted(CHECKS))
def test_the_example_runs_from_the_cli(tmp_path: Path, example: str) -> None:
    out = tmp_path / "out"
    config = EXAMPLES / example / "config.toml"
    proc = run_cli("run", str(config), "--quiet", "--set", f"run.output={out}", timeout=60)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["simulated"]
    rows = _rows(out)
    assert rows and all(row["simulated"] is True for row in rows)
    assert len({row["id"] for row in rows}) == len(rows)
    CHECKS[example](rows, json.loads((out / "report.json").read_text()))


async def test_a_python_example_runs_from_python_and_streams(tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = load_config(EXAMPLES / "curator_poems" / "config.toml", [f"run.output={out}"])
    async with Engine(config, method=Poet) as engine:
        streamed = [row.id async for row in engine.stream()]
    assert engine.result is not None and engine.result.complete
    rows = _rows(out)
    assert sorted(streamed) == sorted(row["id"] for row in rows)
    _curator_poems(rows, json.loads((out / "report.json").read_text()))


def test_an_example_stopped_by_its_budget_resumes_to_the_same_rows(tmp_path: Path) -> None:
    config = str(EXAMPLES / "distilabel_preference" / "config.toml")
    ref, out = tmp_path / "ref", tmp_path / "out"
    assert run_cli("run", config, "--quiet", "--set", f"run.output={ref}").returncode == 0
    budget = ("--set", "budget.max_requests=9")
    stopped = run_cli("run", config, "--quiet", "--set", f"run.output={out}", *budget)
    assert stopped.returncode == 3 and "max_requests 9" in stopped.stderr
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    resumed = run_cli("run", config, "--quiet", "--set", f"run.output={out}")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((out / "report.json").read_text())
    assert sum(e["cache_hits"] for e in report["endpoints"].values()) > 0  # paid once
    assert _by_id(_rows(out)) == _by_id(_rows(ref))


_ROW = re.compile(r"^\| \[`?(\w+)`?\]\([^)]*\) \|")


def test_the_line_counts_in_the_docs_are_the_files_counts() -> None:
    table: dict[str, tuple[int, int]] = {}
    for line in (ROOT / "docs" / "peers-examples.md").read_text().splitlines():
        m = _ROW.match(line)
        if m:
            cells = [c.strip() for c in line.strip("|").split("|")]
            table[m.group(1)] = (int(cells[2]), int(cells[4]))
    assert set(table) == set(CHECKS)
    for example, (peer, ours) in table.items():
        assert peer == count_files([PEERS / f"{example}.py.txt"]), example
        assert ours == count_files(_ours(example)), example


_FENCE = re.compile(r"```python\n(.*?)```", re.S)


def test_the_peer_code_quoted_in_each_readme_is_the_peers() -> None:
    for example in CHECKS:
        readme = (EXAMPLES / example / "README.md").read_text()
        peer = (PEERS / f"{example}.py.txt").read_text()
        quoted = [block for block in _FENCE.findall(readme) if "from engine" not in block]
        assert quoted, f"{example}/README.md quotes no peer code"
        for block in quoted:
            assert block.strip() in peer, f"{example}/README.md misquotes its peer"


_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_links_of_the_examples_docs_resolve() -> None:
    pages = [
        ROOT / "docs" / "own-methods.md",
        ROOT / "docs" / "peers-examples.md",
        EXAMPLES / "README.md",
        PEERS / "README.md",
        *(EXAMPLES / example / "README.md" for example in CHECKS),
    ]
    checked = 0
    for page in pages:
        for target in _LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)}: {target}"
            checked += 1
    assert checked > 40  # the pages link to each other, the examples and the tests
