"""No command destroys what the user has at --out, and no student model runs its own code uninvited.

The two critical cases of the hostile-input review: ``train-student`` removed whatever was at
``--out`` (a thesis, the teacher store itself), and its student fallback let transformers prompt for,
then run, a model's ``configuration_*.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrodistill.artifacts import OutputExistsError, check_output, guarded_output
from retrodistill.cli.app import app

runner = CliRunner()


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def _first_error_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("error:"))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def thesis_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.tex").write_text("\\documentclass{article} years of work")
    return folder


@pytest.fixture()
def fake_store(tmp_path: Path) -> Path:
    """A directory that looks like a teacher-score store (manifest + a part)."""
    store = tmp_path / "scores"
    store.mkdir()
    (store / "manifest.json").write_text(json.dumps({"stage": "score-teacher", "complete": True, "parts": {}}))
    (store / "part-00000.parquet").write_bytes(b"PAR1 not really")
    return store


# --- the rule itself -------------------------------------------------------------------------------


def test_check_output_states(tmp_path: Path, fake_store: Path, thesis_dir: Path) -> None:
    assert check_output(tmp_path / "absent") == "new"
    (tmp_path / "empty").mkdir()
    assert check_output(tmp_path / "empty") == "new"
    assert check_output(fake_store, resumable={"score-teacher"}) == "resume"
    assert check_output(thesis_dir, overwrite=True) == "replace"
    with pytest.raises(OutputExistsError, match=r"exists and holds 1 entry \(thesis.tex\); pass --overwrite"):
        check_output(thesis_dir)
    with pytest.raises(OutputExistsError, match="holds a score-teacher artifact"):
        check_output(fake_store, resumable={"train-student"})


def test_output_may_never_be_or_contain_an_input(tmp_path: Path, fake_store: Path) -> None:
    with pytest.raises(OutputExistsError, match=r"--out .* is the input --store"):
        check_output(fake_store, inputs={"--store": fake_store}, overwrite=True)
    with pytest.raises(OutputExistsError, match=r"--out .* contains the input --store"):
        check_output(tmp_path, inputs={"--store": fake_store}, overwrite=True)
    # An input that does not exist (a hub id, say) is not a path to protect.
    assert check_output(tmp_path / "new", inputs={"--model": "org/model"}) == "new"


def test_guarded_output_restores_the_old_directory_when_the_block_fails(thesis_dir: Path) -> None:
    before = _snapshot(thesis_dir)
    with pytest.raises(RuntimeError), guarded_output(thesis_dir, overwrite=True):
        assert not thesis_dir.exists()  # moved aside while the block runs
        thesis_dir.mkdir()
        (thesis_dir / "half-written").write_text("x")
        raise RuntimeError("killed")
    assert _snapshot(thesis_dir) == before
    assert not list(thesis_dir.parent.glob(".thesis.replaced-*"))


def test_guarded_output_replaces_only_after_success(thesis_dir: Path) -> None:
    with guarded_output(thesis_dir, overwrite=True) as state:
        assert state == "replace"
        thesis_dir.mkdir()
        (thesis_dir / "new.txt").write_text("new")
    assert _snapshot(thesis_dir) == {"new.txt": b"new"}
    assert not list(thesis_dir.parent.glob(".thesis.replaced-*"))


# --- every command that writes a folder ------------------------------------------------------------


def test_train_student_refuses_a_folder_holding_user_files(thesis_dir: Path, fake_store: Path, toy_dir: Path) -> None:
    before = _snapshot(thesis_dir)
    code, output = _invoke(
        "train-student", "--store", str(fake_store), "--dataset", str(toy_dir), "--out", str(thesis_dir)
    )
    assert code == 2, output
    assert _first_error_line(output).startswith(f"error: --out {thesis_dir} exists and holds 1 entry (thesis.tex)")
    assert _snapshot(thesis_dir) == before


def test_train_student_out_equal_to_store_is_refused_even_with_overwrite(fake_store: Path, toy_dir: Path) -> None:
    before = _snapshot(fake_store)
    code, output = _invoke(
        "train-student", "--store", str(fake_store), "--dataset", str(toy_dir), "--out", str(fake_store), "--overwrite"
    )
    assert code == 2, output
    assert _first_error_line(output).startswith(f"error: --out {fake_store} is the input --store")
    assert _snapshot(fake_store) == before


def test_mine_negatives_does_not_write_over_a_teacher_store(fake_store: Path, toy_dir: Path) -> None:
    before = _snapshot(fake_store)
    code, output = _invoke("mine-negatives", "--dataset", str(toy_dir), "--split", "train", "--out", str(fake_store))
    assert code == 2, output
    assert _first_error_line(output).startswith(f"error: --out {fake_store} exists and holds a score-teacher artifact")
    assert _snapshot(fake_store) == before


def test_mine_negatives_overwrite_replaces_the_folder(thesis_dir: Path, toy_dir: Path) -> None:
    code, output = _invoke(
        "mine-negatives", "--dataset", str(toy_dir), "--split", "train", "--out", str(thesis_dir), "--overwrite",
        "--k", "5",
    )
    assert code == 0, output
    assert not (thesis_dir / "thesis.tex").exists()
    assert json.loads((thesis_dir / "manifest.json").read_text())["stage"] == "mine-negatives"


def test_evaluate_does_not_overwrite_earlier_results(tmp_path: Path, toy_dir: Path) -> None:
    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.json").write_text('{"mine": "keep me"}')
    before = _snapshot(out)
    code, output = _invoke("evaluate", "--dataset", str(toy_dir), "--model", "bm25s", "--out", str(out))
    assert code == 2, output
    assert _first_error_line(output).startswith(f"error: --out {out} exists and holds 1 entry (results.json)")
    assert _snapshot(out) == before


def test_evaluate_out_may_not_contain_the_dataset(tmp_path: Path, toy_dir: Path) -> None:
    data = tmp_path / "work" / "toy"
    shutil.copytree(toy_dir, data)
    before = _snapshot(data)
    code, output = _invoke(
        "evaluate", "--dataset", str(data), "--model", "bm25s", "--out", str(tmp_path / "work"), "--overwrite"
    )
    assert code == 2, output
    assert "contains the input --dataset" in _first_error_line(output)
    assert _snapshot(data) == before


def test_score_teacher_refuses_a_foreign_folder_but_resumes_its_own(
    thesis_dir: Path, fake_store: Path, toy_dir: Path, tiny_cross_encoder_dir: Path
) -> None:
    before = _snapshot(thesis_dir)
    args = ["score-teacher", "--model", str(tiny_cross_encoder_dir), "--dataset", str(toy_dir)]
    code, output = _invoke(*args, "--candidates", str(fake_store), "--out", str(thesis_dir))
    assert code == 2, output
    assert "exists and holds 1 entry (thesis.tex)" in _first_error_line(output)
    assert _snapshot(thesis_dir) == before
    code, output = _invoke(*args, "--candidates", str(fake_store), "--out", str(fake_store))
    assert code == 2, output
    assert "is the input --candidates" in _first_error_line(output)


# --- no model code runs uninvited ------------------------------------------------------------------


@pytest.fixture()
def custom_code_model(tmp_path: Path, tiny_bert_dir: Path) -> tuple[Path, Path]:
    """A model folder whose config needs its own ``configuration_evil.py``, which leaves a marker when run."""
    folder = tmp_path / "custom-model"
    shutil.copytree(tiny_bert_dir, folder)
    marker = tmp_path / "code-ran"
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evil-bert"
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import BertConfig\n\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evil-bert'\n"
    )
    return folder, marker


def test_student_with_custom_code_is_refused_without_a_prompt(
    custom_code_model: tuple[Path, Path], fake_store: Path, toy_dir: Path, tmp_path: Path
) -> None:
    from retrodistill.students.bi_encoder import BiEncoderStudent

    folder, marker = custom_code_model
    with pytest.raises(ValueError, match=r"cannot load the student model .*pass --trust-remote-code"):
        BiEncoderStudent(str(folder)).build()
    assert not marker.exists()


def test_missing_student_folder_is_named_not_built(tmp_path: Path) -> None:
    from retrodistill.students.bi_encoder import BiEncoderStudent

    with pytest.raises(FileNotFoundError, match=r"student model \./no/such/student: no such folder"):
        BiEncoderStudent("./no/such/student").build()


def test_a_plain_encoder_still_becomes_a_mean_pooled_student(tiny_bert_dir: Path) -> None:
    from sentence_transformers.sentence_transformer.modules import Pooling

    from retrodistill.students.bi_encoder import BiEncoderStudent

    model = BiEncoderStudent(str(tiny_bert_dir), layers=1).build()
    pooling = [m for m in model if isinstance(m, Pooling)]
    assert len(pooling) == 1 and pooling[0].pooling_mode == "mean"
    assert len(model[0].auto_model.encoder.layer) == 1


def test_stale_staging_folders_of_dead_processes_are_cleaned(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from retrodistill.artifacts import clean_stale_staging, staging_dir
    from retrodistill.temporaries import host_tag

    target = tmp_path / "student"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = host_tag()
    stale = tmp_path / f".student.staging-{int(dead.stdout)}-{here}-abc"
    stale.mkdir()
    live = tmp_path / f".student.staging-{os.getpid()}-{here}-def"
    elsewhere = tmp_path / f".student.staging-{int(dead.stdout)}-{'0' * 6 if here != '0' * 6 else '1' * 6}-ghi"
    elsewhere.mkdir()  # another machine's process id: never judged here
    live.mkdir()
    other = tmp_path / f".thesis.staging-{int(dead.stdout)}-{here}-abc"  # another target's: not ours to judge
    other.mkdir()
    fresh = staging_dir(target)
    assert fresh.parent == tmp_path and fresh.name.startswith(f".student.staging-{os.getpid()}-{here}-")
    assert not stale.exists() and live.exists() and other.exists() and elsewhere.exists()
    assert clean_stale_staging(target) == []


def test_a_second_score_teacher_on_one_store_refuses_while_the_first_lives(
    tmp_path: Path, toy_dir: Path, tiny_cross_encoder_dir: Path
) -> None:
    import subprocess
    import sys
    import time

    out = tmp_path / "scores"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom retrodistill.artifacts import output_lock\n"
         "with output_lock(sys.argv[1], 'score-teacher'):\n    print('held', flush=True)\n    time.sleep(60)\n",
         str(out)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        args = ["score-teacher", "--model", str(tiny_cross_encoder_dir), "--dataset", str(toy_dir)]
        code, output = _invoke(*args, "--candidates", str(tmp_path / "none"), "--out", str(out))
        assert code == 2, output
        assert _first_error_line(output).startswith(f"error: {out} is being written by another score-teacher (process")
    finally:
        holder.kill()
        holder.wait()
    # Its holder was killed: the lock is stale and the next writer takes it over.
    from retrodistill.artifacts import output_lock

    lock = tmp_path / ".scores.lock"
    assert lock.exists()
    start = time.perf_counter()
    with output_lock(out, "score-teacher") as taken:
        assert taken == lock and lock.read_text().split()[0] != str(holder.pid)
    assert not lock.exists() and time.perf_counter() - start < 5
