"""Shared by the export tests: the methods' demo outputs, the export command, and the
checker that loads an export with ``datasets`` and checks it with TRL (see
``tests/e2e/test_export.py`` for what it checks and the TRL doc it follows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import CONFIGS, ROOT, run_cli

__all__ = (
    "CHECKER",
    "DEMOS",
    "DERIVED",
    "HF_CASES",
    "check",
    "export",
    "hf_env",
    "kept_rows",
    "make_outputs",
    "record_of",
)

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


def hf_env(tmp: Path, **extra: str) -> dict[str, str]:
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
        env=hf_env(tmp, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def export(
    out: Path, *args: str, tmp: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "export", str(out), *args, timeout=180, env=env or hf_env(tmp, HF_HUB_OFFLINE="1")
    )


def make_outputs(root: Path, labels: tuple[str, ...] = tuple(DEMOS)) -> dict[str, Path]:
    """The demo outputs (on the simulated endpoint) of ``labels``, under ``root``."""
    made = {}
    for label in labels:
        config, extra = DEMOS[label]
        out = root / label
        args = ["--set", f"run.output={out}"]
        for item in extra:
            args += ["--set", item]
        proc = run_cli("run", str(CONFIGS / config), "--quiet", *args, timeout=240)
        assert proc.returncode == 0, (label, proc.stderr[-2000:])
        made[label] = out
    return made


def kept_rows(out: Path) -> int:
    return int(json.loads((out / "manifest.json").read_text())["totals"]["kept"])


def record_of(directory: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((directory / "export.json").read_text())
    return record
