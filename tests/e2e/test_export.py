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

The Hub push runs against :mod:`tests.fakehub`, which serves the upload API
huggingface_hub calls (create_repo, validate-yaml, preupload, commit, tree, repo info).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CONFIGS, ROOT, run_cli
from tests.fakehub import FakeHub, FakeHubInThread, git_blob_id

pytest.importorskip("datasets")
pytest.importorskip("trl")

# method label -> (config, --set overrides, the manifest's method)
DEMOS: dict[str, tuple[str, list[str]]] = {
    "codeclm": (
        "demo.toml",
        ["method.codeclm.metadata_count=6", "method.codeclm.instructions_per_metadata=3"],
    ),
    "backtranslation": ("backtranslation.toml", []),
    "selfguide": ("selfguide.toml", []),
    "selfguide_classification": ("selfguide_classification.toml", []),
    "lab": ("lab.toml", []),
    "respond": ("respond.toml", []),
}
HF_CASES = ("selfguide", "lab")
# derived training sets the methods write (exported with --from)
DERIVED = {
    "backtranslation": ["training_mix"],
    "selfguide_classification": ["balanced"],
    "lab": ["knowledge", "skills", "mixed"],
}

CHECKER = r"""
import json, sys
from pathlib import Path
import datasets, trl
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from trl.data_utils import apply_chat_template, is_conversational

datasets.disable_progress_bars()
jobs = json.loads(Path(sys.argv[1]).read_text())
cache = sys.argv[2]

vocab = {"[UNK]": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<|endoftext|>": 3}
base = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
base.pre_tokenizer = pre_tokenizers.Whitespace()
base.add_special_tokens(["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
tokenizer = PreTrainedTokenizerFast(
    tokenizer_object=base, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="[UNK]"
)
template = Path(trl.__file__).parent / "chat_templates" / "qwen2_5_training.jinja"
tokenizer.chat_template = template.read_text()

def doc_problem(messages):
    # TRL dataset_formats.md, "Conversational": turns with a role and content.
    if not isinstance(messages, list) or not messages:
        return "no turns"
    roles = [m.get("role") for m in messages]
    if any(r not in ("system", "user", "assistant") for r in roles):
        return f"roles {roles}"
    if "system" in roles[1:]:
        return f"system turn not first: {roles}"
    rest = roles[1:] if roles[0] == "system" else roles
    if not rest or rest[-1] != "assistant":
        return f"does not end with assistant: {roles}"
    if any(r != ("user" if i % 2 == 0 else "assistant") for i, r in enumerate(rest)):
        return f"not alternating user/assistant: {roles}"
    for m in messages:
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            return f"empty {m.get('role')} content"
    return None

results = []
for job in jobs:
    path = job["dir"]
    if job["fmt"] == "hf":
        ds = datasets.load_from_disk(path)
    else:
        ds = datasets.load_dataset(path, split="train", cache_dir=cache)
    problems = []
    masked = 0
    for row in ds:
        if not is_conversational(row):
            problems.append(f"{row['id']}: TRL is_conversational is False")
            continue
        problem = doc_problem(row["messages"])
        if problem:
            problems.append(f"{row['id']}: {problem}")
            continue
        text = apply_chat_template({"messages": row["messages"]}, tokenizer)["text"]
        if not all(m["content"] in text for m in row["messages"]):
            problems.append(f"{row['id']}: a turn is missing from the rendered text")
        out = tokenizer.apply_chat_template(
            row["messages"], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        if 1 not in out["assistant_masks"]:
            problems.append(f"{row['id']}: no assistant token to train on")
        masked += sum(out["assistant_masks"])
    features = {name: str(feature) for name, feature in ds.features.items()}
    results.append(
        {
            "dir": path,
            "rows": ds.num_rows,
            "columns": ds.column_names,
            "features": features,
            "problems": problems[:5],
            "masked": masked,
            "simulated": sorted({bool(s) for s in ds["simulated"]}),
        }
    )
print(json.dumps(results))
"""


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    """A Hugging Face environment of the test's own: no stored login, no telemetry."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HUGGING_FACE")) and k != "HUGGINGFACE_HUB_CACHE"
    }
    env.update(
        HF_HOME=str(tmp / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        **extra,
    )
    return env


def check(jobs: list[dict[str, str]], tmp: Path) -> list[dict[str, Any]]:
    """Run the checker over export directories; its per-directory results."""
    spec = tmp / "jobs.json"
    spec.write_text(json.dumps(jobs))
    proc = subprocess.run(
        [sys.executable, "-c", CHECKER, str(spec), str(tmp / "hf-cache")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
        env=_env(tmp, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def export(
    out: Path, *args: str, tmp: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli("export", str(out), *args, timeout=180, env=env or _env(tmp, HF_HUB_OFFLINE="1"))


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every method's demo output (on the simulated endpoint), made once for the module."""
    root = tmp_path_factory.mktemp("outputs")
    made = {}
    for label, (config, extra) in DEMOS.items():
        out = root / label
        args = ["--set", f"run.output={out}"]
        for item in extra:
            args += ["--set", item]
        proc = run_cli("run", str(CONFIGS / config), "--quiet", *args, timeout=240)
        assert proc.returncode == 0, (label, proc.stderr[-2000:])
        made[label] = out
    return made


def _kept(out: Path) -> int:
    return int(json.loads((out / "manifest.json").read_text())["totals"]["kept"])


def _record(directory: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((directory / "export.json").read_text())
    return record


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
        record = _record(target)
        if "--from" in extra:
            manifest = json.loads((outputs[label] / "manifest.json").read_text())
            listed = {d["name"]: d["rows"] for d in manifest["extra"]["derived"]}
            assert record["rows"] == listed[f"{extra[1]}.jsonl"], (label, extra)
        else:
            # every kept row is exported (none left out: the demo rows are all usable)
            assert record["rows"] == _kept(outputs[label]) > 0, (label, fmt, record)
            assert record["skipped"] == {}
    split = _record(tmp_path / "codeclm-parquet")
    kept = _kept(outputs["codeclm"])
    n = -(-kept // 7)
    assert [f["name"] for f in split["files"]] == [
        f"data/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)
    ]
    assert [f["rows"] for f in split["files"]] == [7] * (kept // 7) + [kept % 7] * (kept % 7 > 0)

    results = check([{"dir": str(target), "fmt": fmt} for _, target, fmt, _ in plan], tmp_path)
    assert len(results) == len(plan)
    dtype = {"string": "string", "bool": "bool", "float64": "float64", "int64": "int64"}
    for result in results:
        record = _record(Path(result["dir"]))
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
    assert _record(partial / "export-messages")["rows"] == _kept(partial)

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


# ---------------------------------------------------------------- the Hub


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHubInThread({"hf_write_token": "alice"}) as served:
        yield served


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there


def _files(directory: Path) -> dict[str, bytes]:
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in directory.rglob("*")
        if p.is_file()
    }


def test_push_to_hub_uploads_the_export_as_written(
    outputs: dict[str, Path], tmp_path: Path, hub: FakeHub
) -> None:
    env = _env(tmp_path, HF_TOKEN="hf_write_token")
    push = ["--push-to-hub", "alice/lab-demo", "--hub-endpoint", hub.url]
    target = tmp_path / "pushed"
    proc = export(
        outputs["lab"], "--format", "parquet", "--output", str(target), *push, tmp=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert f"pushed      {hub.url}/datasets/alice/lab-demo" in proc.stdout
    assert "pushing SIMULATED rows" in proc.stderr
    repo = hub.repo("alice/lab-demo")
    assert repo.files == _files(target)  # byte for byte
    assert len(repo.commits) == 1 and "SIMULATED" in repo.commits[0]["summary"]
    assert hub.validated == [(target / "README.md").read_text(encoding="utf-8")]
    assert (
        "datasets.load_dataset('alice/lab-demo', split=\"train\")"
        in repo.files["README.md"].decode()
    )

    # what the Hub holds loads as the Hub would serve it (the card's configs)
    copy = tmp_path / "from-hub"
    for name, data in repo.files.items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    # a datasets directory pushed: the Hub reads its Arrow files through the card's configs
    # (a local copy without save_to_disk's state.json stands for the Hub's loader here)
    arrow = tmp_path / "arrow"
    hf_push = ["--push-to-hub", "alice/lab-arrow", "--hub-endpoint", hub.url]
    proc = export(
        outputs["lab"], "--format", "hf", "--output", str(arrow), *hf_push, tmp=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    arrow_repo = hub.repo("alice/lab-arrow")
    assert arrow_repo.files == _files(arrow)
    arrow_copy = tmp_path / "arrow-from-hub"
    for name, data in arrow_repo.files.items():
        if name != "state.json":
            (arrow_copy / name).parent.mkdir(parents=True, exist_ok=True)
            (arrow_copy / name).write_bytes(data)
    results = check(
        [{"dir": str(copy), "fmt": "parquet"}, {"dir": str(arrow_copy), "fmt": "parquet"}], tmp_path
    )
    for result in results:
        assert result["problems"] == [] and result["rows"] == _kept(outputs["lab"]), result

    # the same export again: nothing changed, no new commit
    proc = export(
        outputs["lab"], "--format", "parquet", "--output", str(target), *push, tmp=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert len(repo.commits) == 1
    assert f"(commit {repo.head[:12]})" in proc.stdout

    # another format: its files replace the old data files in one commit
    proc = export(outputs["lab"], "--output", str(tmp_path / "jsonl"), *push, tmp=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(repo.commits) == 2
    assert sorted(repo.files) == ["README.md", "data/train.jsonl", "export.json"]
    assert (
        repo.files["data/train.jsonl"] == (tmp_path / "jsonl" / "data" / "train.jsonl").read_bytes()
    )


def test_push_to_hub_private_and_unchanged_blob_ids(
    outputs: dict[str, Path], tmp_path: Path, hub: FakeHub
) -> None:
    env = _env(tmp_path, MY_HUB_TOKEN="hf_write_token")
    target = tmp_path / "private"
    proc = export(
        outputs["respond"],
        "--output",
        str(target),
        "--push-to-hub",
        "alice/private-set",
        "--hub-endpoint",
        hub.url,
        "--hub-token-env",
        "MY_HUB_TOKEN",
        "--private",
        tmp=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    repo = hub.repo("alice/private-set")
    assert repo.private
    assert {git_blob_id(d) for d in repo.files.values()} == {
        git_blob_id(d) for d in _files(target).values()
    }
    assert "hf_write_token" not in proc.stdout + proc.stderr


def test_push_to_hub_errors(outputs: dict[str, Path], tmp_path: Path, hub: FakeHub) -> None:
    push = ["--push-to-hub", "alice/set", "--hub-endpoint", hub.url]
    # no token anywhere: refused before anything is written
    target = tmp_path / "no-token"
    proc = export(
        outputs["respond"], "--output", str(target), *push, tmp=tmp_path, env=_env(tmp_path)
    )
    assert proc.returncode == 2
    assert "no Hugging Face token: the environment variable HF_TOKEN is not set" in proc.stderr
    assert "hf auth login" in proc.stderr
    assert not target.exists() and hub.requests == []

    # a token the Hub refuses: exit 1, the token never printed, nothing created
    env = _env(tmp_path, HF_TOKEN="hf_wrong_secret")
    proc = export(outputs["respond"], "--output", str(target), *push, tmp=tmp_path, env=env)
    assert proc.returncode == 1
    assert "endpoint 'hub'" in proc.stderr and "the Hub refused the token" in proc.stderr
    assert "hf_wrong_secret" not in proc.stdout + proc.stderr
    assert hub.repos == {}

    # a namespace the token may not write to
    env = _env(tmp_path, HF_TOKEN="hf_write_token")
    proc = export(
        outputs["respond"],
        "--output",
        str(target),
        "--push-to-hub",
        "someone-else/set",
        "--hub-endpoint",
        hub.url,
        tmp=tmp_path,
        env=env,
    )
    assert proc.returncode == 1
    assert "HTTP 403" in proc.stderr and "the Hub refused the token" in proc.stderr

    # a Hub that does not answer: the connection error, mapped
    proc = export(
        outputs["respond"],
        "--output",
        str(target),
        "--push-to-hub",
        "alice/set",
        "--hub-endpoint",
        f"http://127.0.0.1:{_closed_port()}",
        tmp=tmp_path,
        env=env,
    )
    assert proc.returncode == 1
    assert "endpoint 'hub': create dataset repository alice/set: ConnectError" in proc.stderr

    # a malformed repository id
    proc = export(outputs["respond"], "--push-to-hub", "a/b/c", tmp=tmp_path, env=env)
    assert proc.returncode == 2 and "'a/b/c' is not a repository id" in proc.stderr
