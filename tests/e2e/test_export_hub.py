"""``synth-engine export --push-to-hub`` against :mod:`tests.fakehub`, a loopback server
that serves the upload API huggingface_hub calls (create_repo, validate-yaml, preupload,
commit, tree, repo info): the repository holds the export byte for byte and what it
holds loads and passes the conversational checks (``tests/e2e/test_export.py``); an
unchanged push makes no commit; another format replaces the old data files; private
repositories; missing, refused, unauthorised tokens and an unreachable Hub."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.exporting import check, export, hf_env, kept_rows, make_outputs
from tests.fakehub import FakeHub, FakeHubInThread, git_blob_id

pytest.importorskip("datasets")
pytest.importorskip("trl")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The LAB and respond demo outputs, made once for the module."""
    return make_outputs(tmp_path_factory.mktemp("outputs"), ("lab", "respond"))


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
    env = hf_env(tmp_path, HF_TOKEN="hf_write_token")
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
        assert result["problems"] == [] and result["rows"] == kept_rows(outputs["lab"]), result

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
    env = hf_env(tmp_path, MY_HUB_TOKEN="hf_write_token")
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
        outputs["respond"], "--output", str(target), *push, tmp=tmp_path, env=hf_env(tmp_path)
    )
    assert proc.returncode == 2
    assert "no Hugging Face token: the environment variable HF_TOKEN is not set" in proc.stderr
    assert "hf auth login" in proc.stderr
    assert not target.exists() and hub.requests == []

    # a token the Hub refuses: exit 1, the token never printed, nothing created
    env = hf_env(tmp_path, HF_TOKEN="hf_wrong_secret")
    proc = export(outputs["respond"], "--output", str(target), *push, tmp=tmp_path, env=env)
    assert proc.returncode == 1
    assert "endpoint 'hub'" in proc.stderr and "the Hub refused the token" in proc.stderr
    assert "hf_wrong_secret" not in proc.stdout + proc.stderr
    assert hub.repos == {}

    # a namespace the token may not write to
    env = hf_env(tmp_path, HF_TOKEN="hf_write_token")
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
