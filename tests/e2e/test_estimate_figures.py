"""``validate --estimate`` checked with concrete numbers: the calls it predicts against the
calls a real run makes, and its cost against the prices (genai-prices' for a known hosted
model, the user's own where given). The estimate is a dry run on SIMULATED endpoints, so
the hosted URLs below are never called; the real runs use the simulated endpoint on
127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import genai_prices

from tests.conftest import ROOT, run_cli
from tests.e2e.test_codeclm_field_seeds import codeclm_config

OPENAI = "https://api.openai.com/v1"
SEEDS = [
    "Explain what a hash table is to a new programmer.",
    "Write a haiku about debugging at night.",
    "List three ways to make a slow SQL query faster.",
    "Summarise the causes of the French Revolution in five sentences.",
    "Give a recipe for a vegetarian lasagne.",
    "What is the difference between TCP and UDP?",
]
ALPACA = ROOT / "tests" / "fixtures" / "field" / "codeclm" / "seed_tasks_head12.jsonl"


def _respond(tmp: Path, writer: str, grader: str, grader_model: str = "gpt-4o") -> Path:
    name = "sim" if writer == "sim" else "hosted"
    seeds = tmp / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": s}) + "\n" for s in SEEDS))
    path = tmp / f"job-{name}.toml"
    path.write_text(
        f"""
[run]
method = "respond"
input = "seeds.jsonl"
output = "out-{name}"

[endpoints.writer]
base_url = "{writer}"
model = "gpt-4"

[endpoints.grader]
base_url = "{grader}"
model = "{grader_model}"
price = {{ prompt = 1.0, completion = 2.0 }}

[endpoints.mine]
base_url = "{writer}"
model = "my-finetune-xyz-2026"

[roles]
strong = "writer"
judge = "grader"
"""
    )
    return path


def _estimate(config: Path, sample: int) -> dict[str, Any]:
    proc = run_cli("validate", str(config), "--estimate", str(sample), "--json")
    assert proc.returncode == 0, proc.stderr
    est: dict[str, Any] = json.loads(proc.stdout)["estimate"]
    assert est["simulated"] is True
    return est


def _requests(out: Path) -> int:
    report = json.loads((out / "report.json").read_text())
    return sum(int(e["requests"]) for e in report["endpoints"].values())


def test_respond_estimate_calls_and_costs(tmp_path: Path) -> None:
    est = _estimate(_respond(tmp_path, OPENAI, OPENAI), sample=3)
    assert (est["sampled_items"], est["total_items"], est["scale"]) == (3, 6, 2.0)
    writer, grader = est["endpoints"]["writer"], est["endpoints"]["grader"]
    # respond makes one answer and one judge call per item: 6 items, 12 calls
    assert (writer["calls"], grader["calls"], est["total"]["calls"]) == (6, 6, 12)
    # the writer (gpt-4 at OpenAI, no price in the config) is priced from genai-prices
    gpt4 = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=writer["prompt_tokens"], output_tokens=writer["completion_tokens"]
        ),
        "gpt-4",
        provider_id="openai",
    )
    assert writer["prompt_tokens"] > 0 and writer["completion_tokens"] > 0
    assert writer["cost_usd"] == round(float(gpt4.total_price), 4) > 0
    # the grader's own price (1 and 2 USD per 1M) wins over the table's gpt-4o price
    own = (grader["prompt_tokens"] * 1.0 + grader["completion_tokens"] * 2.0) / 1e6
    assert grader["cost_usd"] == round(own, 4)
    total = float(gpt4.total_price) + own
    assert est["total"]["cost_usd"] == round(total, 4) and est["unpriced"] == []

    # the same job on the simulated endpoint makes the calls the estimate predicted
    real = _respond(tmp_path, "sim", "sim")
    proc = run_cli("run", str(real), "--quiet")
    assert proc.returncode in (0, 5), proc.stderr  # 5: the simulated judge kept nothing
    assert _requests(tmp_path / "out-sim") == est["total"]["calls"]


def test_an_unpriced_model_makes_the_cost_unknown_and_says_what_to_set(tmp_path: Path) -> None:
    config = _respond(tmp_path, OPENAI, OPENAI)
    text = config.read_text().replace('judge = "grader"', 'judge = "mine"')
    config.write_text(text)
    est = _estimate(config, sample=3)
    assert est["endpoints"]["mine"]["cost_usd"] is None and est["unpriced"] == ["mine"]
    assert est["total"]["cost_usd"] is None
    proc = run_cli("validate", str(config), "--estimate", "3")
    assert proc.returncode == 0, proc.stderr
    assert "my-finetune-xyz-2026: 6 calls" in proc.stdout and "no price" in proc.stdout
    assert "cost unknown (no price for mine; set [endpoints.NAME.price])" in proc.stdout


def test_codeclm_estimate_from_half_the_seeds_is_near_the_real_run(tmp_path: Path) -> None:
    config = codeclm_config(tmp_path, ALPACA)
    est = _estimate(config, sample=6)
    assert (est["sampled_items"], est["total_items"]) == (6, 12)
    proc = run_cli("run", str(config), "--quiet")
    assert proc.returncode == 0, proc.stderr
    real = _requests(tmp_path / "out")
    predicted = est["total"]["calls"]
    # Measured: 191 predicted, 226 made (-15%). Encode calls scale with the seeds; the
    # rest depends on how many contrastive rounds the (simulated) judge asks for.
    assert abs(predicted - real) <= 0.2 * real, (predicted, real)
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    report, encode = written["method_report"], written["stages"]["encode"]
    assert encode["calls"] == 12 and report["seeds_read"] == 12
