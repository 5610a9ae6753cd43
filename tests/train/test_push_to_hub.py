"""``train-student --push-to-hub``: the token is checked before training, the push follows completion.

The Hub client is replaced by recording doubles of ``HfApi.create_repo`` and ``HfApi.upload_folder``;
nothing reaches the network.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import huggingface_hub
import pytest
from typer.testing import CliRunner

from retrodistill.cli.app import app
from retrodistill.data.store import TeacherStore

runner = CliRunner()


@pytest.fixture()
def hub(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every Hub call, with what the folder held at upload time."""
    calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self: Any, repo_id: str, **kwargs: Any) -> Any:
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kwargs}))
        return SimpleNamespace(url=f"https://huggingface.co/{repo_id}")

    def upload_folder(self: Any, **kwargs: Any) -> Any:
        folder = Path(kwargs["folder_path"])
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        readme = (folder / "README.md").read_text(encoding="utf-8")
        calls.append(("upload_folder", {**kwargs, "files": files, "readme": readme}))
        return SimpleNamespace(commit_url="https://huggingface.co/x/commit/1")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def _train_args(toy_dir: Path, tiny_st_dir: Path, store: TeacherStore, out: Path) -> list[str]:
    return [
        "train-student", "--store", str(store.path), "--student", str(tiny_st_dir), "--dataset", str(toy_dir),
        "--negatives", "2", "--max-steps", "2", "--batch-size", "4", "--out", str(out),
    ]  # fmt: skip


def test_push_without_a_token_stops_before_training(
    toy_dir: Path,
    tiny_st_dir: Path,
    cross_store: TeacherStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hub: list,
) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = tmp_path / "student"
    result = runner.invoke(app, [*_train_args(toy_dir, tiny_st_dir, cross_store, out), "--push-to-hub", "me/student"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "set HF_TOKEN" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() and not hub


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--push-to-hub", "not a/valid/repo id"], "is not a Hub repository id"),
        (["--private"], "--private applies to --push-to-hub"),
    ],
)
def test_bad_push_options_stop_before_training(
    toy_dir: Path, tiny_st_dir: Path, cross_store: TeacherStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    hub: list, extra: list[str], message: str,
) -> None:  # fmt: skip
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    out = tmp_path / "student"
    result = runner.invoke(app, [*_train_args(toy_dir, tiny_st_dir, cross_store, out), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists() and not hub


def test_the_complete_student_is_pushed_private_with_its_card(
    toy_dir: Path,
    tiny_st_dir: Path,
    cross_store: TeacherStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hub: list,
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    out = tmp_path / "student"
    args = [*_train_args(toy_dir, tiny_st_dir, cross_store, out), "--push-to-hub", "me/student", "--private"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "pushed" in result.output and "https://huggingface.co/me/student" in result.output
    assert [name for name, _ in hub] == ["create_repo", "upload_folder"]
    created, uploaded = hub[0][1], hub[1][1]
    assert created["repo_id"] == "me/student" and created["private"] is True and created["token"] == "hf_test"
    assert created["exist_ok"] is True
    assert uploaded["repo_id"] == "me/student" and Path(uploaded["folder_path"]) == out
    # Uploaded from the published folder, complete: weights, manifest, card naming the repository.
    assert {"manifest.json", "model.safetensors", "modules.json", "README.md"} <= set(uploaded["files"])
    assert not any(".staging" in f for f in uploaded["files"])
    assert "SentenceTransformer('me/student')" in uploaded["readme"]
    assert "margin-mse" in uploaded["commit_message"]
    assert json.loads((out / "manifest.json").read_text())["stage"] == "train-student"


def test_a_failed_push_keeps_the_student_and_says_so_in_one_line(
    toy_dir: Path,
    tiny_st_dir: Path,
    cross_store: TeacherStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    hub: list,
) -> None:
    def refuse(self: Any, **kwargs: Any) -> Any:
        raise RuntimeError("403 Forbidden: you cannot write to me/student\nmore detail")

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    out = tmp_path / "student"
    result = runner.invoke(app, [*_train_args(toy_dir, tiny_st_dir, cross_store, out), "--push-to-hub", "me/student"])
    assert result.exit_code == 2, result.output
    assert f"the student is complete at {out}, but pushing it to me/student failed: 403 Forbidden" in result.output
    assert "more detail" not in result.output
    assert (out / "manifest.json").is_file()
