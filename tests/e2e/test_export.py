"""``synth-engine export``: every method's demo output, as JSONL and Parquet (and a
``datasets`` directory for two of them), loads with ``datasets`` and passes the
conversational format TRL documents; refusals; the Hub push.

The format check follows TRL's ``docs/source/dataset_formats.md`` (huggingface/trl at
commit 0087e4f5f389bf0fba0d8d5458e2243a11640f6c), "Conversational" and "Language
modeling": a ``messages`` column holding a list of turns, each with a ``role`` and its
``content``. On every exported row the checker runs, in a subprocess (the imports take
seconds and their warnings are not this project's):

* TRL's own ``trl.data_utils.is_conversational`` (what ``SFTTrainer`` asks of a dataset);
* the doc's rules, written out here (TRL's helper looks at the first turn only): roles
  ``system`` / ``user`` / ``assistant``, a system turn only first, user and assistant
  alternating from user and ending with assistant, every content a non-blank string;
* ``trl.data_utils.apply_chat_template`` and ``apply_chat_template(...,
  return_assistant_tokens_mask=True)`` with one of TRL's own training chat templates
  (``trl/chat_templates/qwen2_5_training.jinja``, its ``{% generation %}`` marks) on an
  offline word-level tokenizer: the rendered text holds every turn, and the assistant
  mask is not all zeros (the check ``SFTTrainer(assistant_only_loss=True)`` makes).

The checker and the demo outputs live in :mod:`tests.e2e.exporting`; the Hub push is
tested in ``tests/e2e/test_export_hub.py``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIGS, run_cli
from tests.e2e.exporting import DERIVED, HF_CASES, check, export, kept_rows, make_outputs, record_of

pytest.importorskip("datasets")
pytest.importorskip("trl")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every method's demo output (on the simulated endpoint), made once for the module."""
    return make_outputs(tmp_path_factory.mktemp("outputs"))


def test_every_method_in_every_format_loads_and_is_trl_conversational(
    outputs: dict[str, Path], tmp_path: Path
) -> None:
    # (output, export directory, format, extra arguments); two exports at a time
    plan: list[tuple[str, Path, str, list[str]]] = []
    for label in outputs:
        # hf is parquet read into datasets and saved: two methods show it (one with a
        # column null on every row), the per-method columns are already in parquet
        formats = ("messages", "parquet", "hf") if label in HF_CASES else ("messages", "parquet")
        for fmt in formats:
            extra = ["--format", fmt]
            if label == "codeclm" and fmt == "parquet":
                extra += ["--rows-per-file", "7"]  # several Parquet files
            plan.append((label, tmp_path / f"{label}-{fmt}", fmt, extra))
        plan += [
            (label, tmp_path / f"{label}-{name}", "messages", ["--from", name])
            for name in DERIVED.get(label, [])
        ]

    def run(job: tuple[str, Path, str, list[str]]) -> subprocess.CompletedProcess[str]:
        label, target, _, extra = job
        return export(outputs[label], *extra, "--output", str(target), tmp=tmp_path)

    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(run, plan))
    for (label, target, fmt, extra), proc in zip(plan, procs, strict=True):
        assert proc.returncode == 0, (label, extra, proc.stderr[-2000:])
        assert "SIMULATED" in proc.stdout
        record = record_of(target)
        if "--from" in extra:
            manifest = json.loads((outputs[label] / "manifest.json").read_text())
            listed = {d["name"]: d["rows"] for d in manifest["extra"]["derived"]}
            assert record["rows"] == listed[f"{extra[1]}.jsonl"], (label, extra)
        else:
            # every kept row is exported (none left out: the demo rows are all usable)
            assert record["rows"] == kept_rows(outputs[label]) > 0, (label, fmt, record)
            assert record["skipped"] == {}
    split = record_of(tmp_path / "codeclm-parquet")
    kept = kept_rows(outputs["codeclm"])
    n = -(-kept // 7)
    assert [f["name"] for f in split["files"]] == [
        f"data/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)
    ]
    assert [f["rows"] for f in split["files"]] == [7] * (kept // 7) + [kept % 7] * (kept % 7 > 0)

    results = check([{"dir": str(target), "fmt": fmt} for _, target, fmt, _ in plan], tmp_path)
    assert len(results) == len(plan)
    dtype = {"string": "string", "bool": "bool", "float64": "float64", "int64": "int64"}
    for result in results:
        record = record_of(Path(result["dir"]))
        assert result["problems"] == [], result
        assert result["rows"] == record["rows"], result
        assert result["simulated"] == [True]
        assert result["columns"] == [c["name"] for c in record["columns"]], result
        # one type per column, whatever the format (the card's features type the JSONL)
        for column in record["columns"]:
            feature = result["features"][column["name"]]
            if column["type"] == "messages":
                assert "role" in feature and "content" in feature, feature
            else:
                assert feature == f"Value('{dtype[column['type']]}')", (result["dir"], column)
        assert result["masked"] > 0


def test_system_turns_are_the_methods_own(outputs: dict[str, Path], tmp_path: Path) -> None:
    """Humpback's tags (S_w on kept rows, S_a on the mix's seeds), LAB's SDG system prompt,
    SELF-GUIDE's instruction and input, CodecLM's instruction and chosen response."""

    def rows(label: str, *args: str) -> list[dict[str, Any]]:
        target = tmp_path / f"{label}{'-'.join(args)}"
        proc = export(outputs[label], *args, "--output", str(target), tmp=tmp_path)
        assert proc.returncode == 0, proc.stderr
        text = (target / "data" / "train.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    web = rows("backtranslation")
    assert {r["messages"][0]["content"] for r in web} == {"Answer with knowledge from web search."}
    assert {r["tag"] for r in web} == {"S_w"}
    mix = rows("backtranslation", "--from", "training_mix")
    seeds = [r for r in mix if r["origin"] == "seed"]
    assert seeds and {r["messages"][0]["content"] for r in seeds} == {
        "Answer in the style of an AI Assistant."
    }
    assert {r["tag"] for r in seeds} == {"S_a"}

    lab = rows("lab")
    assert {r["messages"][0]["content"][:24] for r in lab} == {"I am a Red Hat® Instruct"}
    kept = {
        json.loads(line)["id"]: json.loads(line)
        for line in (outputs["lab"] / "kept-00000.jsonl").read_text().splitlines()
    }
    for r in lab:
        source = kept[r["id"]]
        assert r["messages"][1]["content"].endswith(source["question"])
        assert r["messages"][2]["content"] == source["answer"]
        assert r["unmask"] is (source["kind"] == "knowledge")

    guide = rows("selfguide")
    kept = {
        json.loads(line)["id"]: json.loads(line)
        for line in (outputs["selfguide"] / "kept-00000.jsonl").read_text().splitlines()
    }
    for r in guide:
        source = kept[r["id"]]
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert r["messages"][0]["content"] == f"{source['instruction']}\n\n{source['input']}"
        assert r["messages"][1]["content"] == source["output"]

    codec = rows("codeclm")
    kept = {
        json.loads(line)["id"]: json.loads(line)
        for p in sorted(outputs["codeclm"].glob("kept-*.jsonl"))
        for line in p.read_text().splitlines()
    }
    for r in codec:
        source = kept[r["id"]]
        assert r["messages"] == [
            {"role": "user", "content": source["instruction"]},
            {"role": "assistant", "content": source["response"]},
        ]
        assert r["response_source"] == source["response_source"]


def test_the_card_says_what_the_export_is(outputs: dict[str, Path], tmp_path: Path) -> None:
    import yaml

    target = tmp_path / "card"
    proc = export(
        outputs["backtranslation"], "--format", "parquet", "--output", str(target), tmp=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    card = (target / "README.md").read_text(encoding="utf-8")
    head, body = card.split("\n---\n", 1)
    meta = yaml.safe_load(head.removeprefix("---\n"))
    assert "simulated" in meta["tags"] and "SIMULATED" in meta["pretty_name"]
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    assert body.lstrip().startswith("# backtranslation:")
    assert "> **SIMULATED.**" in body.split("## ")[0]  # before the first section
    assert "https://arxiv.org/abs/2308.06259" in body
    assert "| strong | sim-strong |" in body
    manifest = json.loads((outputs["backtranslation"] / "manifest.json").read_text())
    totals = manifest["totals"]
    assert f"- rows kept: {totals['kept']}, rejected: {totals['rejected']}" in body
    config = json.loads((outputs["backtranslation"] / "config.json").read_text())
    assert json.dumps(config, indent=2, ensure_ascii=False) in body
    assert manifest["config_hash"] in body


def test_refusals_and_replacing_an_earlier_export(outputs: dict[str, Path], tmp_path: Path) -> None:
    # an incomplete output (a request budget stops it early, exit 3)
    partial = tmp_path / "partial"
    proc = run_cli(
        "run",
        str(CONFIGS / "respond.toml"),
        "--quiet",
        "--set",
        f"run.output={partial}",
        "--set",
        "budget.max_requests=10",
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    proc = export(partial, tmp=tmp_path)
    assert proc.returncode == 2
    assert "not complete (budget" in proc.stderr and "--allow-incomplete" in proc.stderr
    assert not (partial / "export-messages").exists()
    proc = export(partial, "--allow-incomplete", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "INCOMPLETE" in proc.stdout
    assert "> **INCOMPLETE.**" in (partial / "export-messages" / "README.md").read_text()
    assert record_of(partial / "export-messages")["rows"] == kept_rows(partial)

    # a corrupt output: one byte of a kept shard changed
    corrupt = tmp_path / "corrupt"
    proc = run_cli(
        "run", str(CONFIGS / "respond.toml"), "--quiet", "--set", f"run.output={corrupt}"
    )
    assert proc.returncode == 0, proc.stderr
    shard = corrupt / "kept-00000.jsonl"
    data = bytearray(shard.read_bytes())
    data[10] ^= 1
    shard.write_bytes(bytes(data))
    for extra in ([], ["--allow-incomplete"]):
        proc = export(corrupt, *extra, tmp=tmp_path)
        assert proc.returncode == 2
        assert "CORRUPT: 1 shard(s)" in proc.stderr and "--force-new" in proc.stderr

    # not an output at all
    proc = export(tmp_path / "nowhere", tmp=tmp_path)
    assert proc.returncode == 2 and "no such output directory" in proc.stderr

    # --output that holds something else is never touched
    mine = tmp_path / "my-notes"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    proc = export(outputs["respond"], "--output", str(mine), tmp=tmp_path)
    assert proc.returncode == 2 and "is not an export of synth-engine" in proc.stderr
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    proc = export(outputs["respond"], "--output", str(outputs["respond"]), tmp=tmp_path)
    assert proc.returncode == 2  # the output itself is not an export either

    # a derived file that does not match the SHA-256 the manifest records
    tampered = tmp_path / "tampered"
    shutil.copytree(outputs["lab"], tampered)
    with (tampered / "skills.jsonl").open("a") as f:
        f.write("\n")
    proc = export(tampered, "--from", "skills", tmp=tmp_path)
    assert proc.returncode == 2 and "skills.jsonl: SHA-256 differs from the manifest" in proc.stderr

    # an unknown derived dataset names the ones there are
    proc = export(outputs["lab"], "--from", "nope", tmp=tmp_path)
    assert proc.returncode == 2
    assert "has no derived dataset 'nope' (it has: knowledge, skills, mixed)" in proc.stderr

    # an earlier export is replaced whole: no file of another format is left behind
    target = tmp_path / "again"
    assert (
        export(
            outputs["respond"], "--format", "parquet", "--output", str(target), tmp=tmp_path
        ).returncode
        == 0
    )
    assert export(outputs["respond"], "--output", str(target), tmp=tmp_path).returncode == 0
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()) == [
        "README.md",
        "data/train.jsonl",
        "export.json",
    ]
    assert not list(tmp_path.glob(".again*"))  # no staging directory left
