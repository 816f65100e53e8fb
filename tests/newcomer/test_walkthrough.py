"""The README's "Your first own dataset" walkthrough, run command by command as written.

The section's fenced ``bash`` blocks are parsed into commands (a heredoc is one command)
and run in order in an empty directory, each with ``bash -c``, where ``synth-engine``
and ``python`` are this checkout's (``python -m engine``). Port 8000 becomes a free
port. The one background command, ``synth-engine sim --port 8000 &``, is started as a
process of its own (its group is stopped at the end, or by the section's ``kill %1``).
Each command's exit code and key output lines are asserted (:data:`STEPS`: a README
edit that adds, drops or reorders a command fails here until the test follows), and so
is every line of the section's ``text`` blocks, the output the README shows (numbers
and ``...`` match anything).
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

SECTION = "## Your first own dataset"
PREAMBLE = 'synth-engine() { "$SE_PYTHON" -m engine "$@"; }\npython() { "$SE_PYTHON" "$@"; }\n'

# (start of the command, exit code (None: background / job control), lines of its output)
STEPS: list[tuple[str, int | None, list[str]]] = [
    ("cat > seeds.jsonl", 0, []),
    (
        "synth-engine sim --port 8000 &",
        None,
        ["SIMULATED endpoint listening on http://127.0.0.1:8000/v1"],
    ),
    ("cat > job.toml", 0, []),
    (
        "synth-engine validate job.toml --ping --estimate",
        2,
        [
            "input seeds.jsonl: 4 usable, 0 bad",
            "ping mine: FAILED: endpoint 'mine': HTTP 404",
            "(OpenAI-compatible servers serve under /v1)",
            "job.toml: fix the endpoint problems above before running",
        ],
    ),
    ("sed -i.bak", 0, []),
    (
        "synth-engine validate job.toml --ping --estimate",
        0,
        [
            "config OK — method respond; endpoints: mine (http://127.0.0.1:8000/v1, sim-model)",
            "ping mine: OK: http://127.0.0.1:8000/v1 answered in",
            "model 'sim-model' is served",
        ],
    ),
    (
        "synth-engine run job.toml",
        0,
        ["** SIMULATED ENDPOINT", "rows        kept 4   rejected 0   failed 0", "output      "],
    ),
    ("synth-engine inspect out", 0, ["out: respond, complete (verified)", "kept 4"]),
    (
        "synth-engine export out --format messages",
        0,
        [
            "exported    4 conversations (respond, kept rows) -> out/export-messages",
            "files       data/train.jsonl (4 rows), README.md (dataset card), export.json",
        ],
    ),
    (
        "python -c",
        0,
        ["[{'role': 'user', 'content': 'Explain what a hash table is to a new programmer.'}"],
    ),
    ("kill %1", None, []),
]


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end >= 0 else len(text)]


def _commands(block: str) -> list[str]:
    """A bash block's commands: heredocs whole, continuation lines joined, comments out."""
    lines = block.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = line
        heredoc = re.search(r"<<-?\s*'?(\w+)'?", line)
        if heredoc:
            while lines[i] != heredoc.group(1):
                command += "\n" + lines[i]
                i += 1
            command += "\n" + lines[i]
            i += 1
        while command.endswith("\\"):
            command += "\n" + lines[i]
            i += 1
        out.append(command)
    return out


def parse() -> list[tuple[str, list[str]]]:
    """The section's commands in order, each with the lines of the text block that
    follows its bash block (the output the README shows for it)."""
    steps: list[tuple[str, list[str]]] = []
    for kind, body in re.findall(r"```(bash|text)\n(.*?)```", _section(), re.S):
        if kind == "bash":
            steps += [(command, []) for command in _commands(body)]
        else:
            assert steps, "a text block before any command"
            steps[-1][1].extend(line for line in body.splitlines() if line.strip())
    return steps


def _shown(line: str) -> re.Pattern[str]:
    """A README output line as a pattern: ``...`` and numbers match anything."""
    parts = [re.escape(p) for p in line.strip().split("...")]
    pattern = ".*".join(re.sub(r"\d+", r"\\d+", p) for p in parts)
    return re.compile(pattern)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[str]) -> None:
    """Stop a background command's process group (the shell and what it started)."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    if process.stdout is not None:
        process.stdout.close()


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        SE_PYTHON=sys.executable,
        PYTHONPATH=str(ROOT),
        HF_HOME=str(tmp / ".hf"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    return env


def test_parsed_commands_are_the_steps() -> None:
    commands = [command for command, _ in parse()]
    assert len(commands) == len(STEPS), commands
    for command, (start, _, _) in zip(commands, STEPS, strict=True):
        assert command.startswith(start), (command, start)


def test_readme_walkthrough_runs_as_written(tmp_path: Path) -> None:
    port = str(_free_port())
    env = _env(tmp_path)
    background: subprocess.Popen[str] | None = None
    try:
        for (command, shown), (_, code, expected) in zip(parse(), STEPS, strict=True):
            command = command.replace("8000", port)
            expected = [e.replace("8000", port) for e in expected]
            shown = [s.replace("8000", port) for s in shown]
            if command.rstrip().endswith("&"):
                background = subprocess.Popen(
                    ["bash", "-c", PREAMBLE + command.rstrip().removesuffix("&")],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
                assert background.stdout is not None
                ready, _, _ = select.select([background.stdout], [], [], 60)
                assert ready, "the simulated endpoint did not start within 60 s"
                output = background.stdout.readline()
            elif command.strip() == "kill %1":
                assert background is not None, "kill %1 before any background job"
                _stop(background)
                background = None
                continue
            else:
                proc = subprocess.run(
                    ["bash", "-c", PREAMBLE + command],
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=180,
                    check=False,
                )
                output = proc.stdout + proc.stderr
                assert proc.returncode == code, (command, output[-3000:])
            for line in expected:
                assert line in output, (command, line, output[-3000:])
            for line in shown:
                assert _shown(line).search(output), (command, line, output[-3000:])
    finally:
        if background is not None:
            _stop(background)
    # what the walkthrough promises to leave behind
    assert (tmp_path / "out" / "export-messages" / "data" / "train.jsonl").is_file()
    assert "/v1" in (tmp_path / "job.toml").read_text()
