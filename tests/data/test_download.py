"""resolve_dataset without a network: BEIR_URL points at zips built in tmp_path and served as file:// URLs."""

from __future__ import annotations

import hashlib
import io
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from retrodistill.data import download
from retrodistill.data.download import DatasetDownloadError, load_dataset, resolve_dataset


def _zip_folder(folder: Path, zip_path: Path, top: str | None) -> Path:
    """Zip ``folder``'s files under a top folder ``top/`` (as BEIR does), or at the root if None."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                relative = path.relative_to(folder).as_posix()
                archive.write(path, f"{top}/{relative}" if top else relative)
    return zip_path


@pytest.fixture()
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toy_dir: Path) -> Path:
    """A folder served as the BEIR download site, holding ``toy.zip``; every test stays offline."""
    site = tmp_path / "site"
    _zip_folder(toy_dir, site / "toy.zip", top="toy")
    monkeypatch.setattr(download, "BEIR_URL", site.as_uri() + "/{name}.zip")
    monkeypatch.delenv(download.DATA_ENV, raising=False)
    return site


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("resolve_dataset tried to download")


def test_download_extracts_into_data_dir(served: Path, toy_dir: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    path = resolve_dataset("toy", data_dir)
    assert path == data_dir / "toy"
    assert sorted(p.name for p in data_dir.iterdir()) == ["toy"]  # no temp folder or zip left behind
    assert (path / "corpus.jsonl").read_bytes() == (toy_dir / "corpus.jsonl").read_bytes()


def test_download_with_matching_md5(served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(download.BEIR_MD5, "toy", _md5(served / "toy.zip"))
    collection = load_dataset("toy", "test", tmp_path / "data")
    assert collection.name == "toy" and collection.queries


def test_md5_mismatch_leaves_nothing_behind(served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(download.BEIR_MD5, "toy", "0" * 32)
    data_dir = tmp_path / "data"
    with pytest.raises(DatasetDownloadError, match=f"md5 {_md5(served / 'toy.zip')} does not match BEIR's"):
        resolve_dataset("toy", data_dir)
    assert not data_dir.exists()  # it did not exist before, so it is removed again


def test_failure_keeps_an_existing_data_dir(served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(download.BEIR_MD5, "toy", "0" * 32)
    data_dir = tmp_path / "data"
    (data_dir / "other").mkdir(parents=True)
    with pytest.raises(DatasetDownloadError):
        resolve_dataset("toy", data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == ["other"]


def test_existing_folder_is_returned_without_download(
    toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert resolve_dataset(str(toy_dir)) == toy_dir
    assert resolve_dataset(toy_dir, tmp_path / "elsewhere") == toy_dir


def test_named_dataset_already_in_data_dir(toy_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert resolve_dataset("toy", toy_copy.parent) == toy_copy


def test_env_variable_sets_the_data_dir(served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_dir = tmp_path / "from-env"
    monkeypatch.setenv(download.DATA_ENV, str(env_dir))
    assert resolve_dataset("toy") == env_dir / "toy"  # downloaded there
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    assert resolve_dataset("toy") == env_dir / "toy"  # and found there next time


def test_argument_overrides_env(served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(download.DATA_ENV, str(tmp_path / "from-env"))
    assert resolve_dataset("toy", tmp_path / "given") == tmp_path / "given" / "toy"
    assert not (tmp_path / "from-env").exists()


def test_default_data_dir_is_dot_data(served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_dataset("toy") == Path("data") / "toy"
    assert (tmp_path / "data" / "toy" / "corpus.jsonl").is_file()


def test_download_disabled_is_a_clear_error(served: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="--data-dir or RETRODISTILL_DATA") as info:
        resolve_dataset("toy", tmp_path / "data", download=False)
    assert str(tmp_path / "data" / "toy") in str(info.value)
    assert not (tmp_path / "data").exists()


def test_http_404_names_the_known_datasets(served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def not_found(url: str, timeout: float) -> None:
        raise urllib.error.HTTPError(url, 404, "Not Found", None, io.BytesIO())  # type: ignore[arg-type]

    monkeypatch.setattr(urllib.request, "urlopen", not_found)
    with pytest.raises(DatasetDownloadError, match=r"HTTP 404, BEIR has no dataset named 'scifakt'.*scifact"):
        resolve_dataset("scifakt", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_network_failure_says_url_and_how_to_point_at_a_copy(
    served: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetDownloadError) as info:
        resolve_dataset("scifact", tmp_path / "data")
    message = str(info.value)
    assert download.BEIR_URL.format(name="scifact") in message
    assert "name resolution" in message and "--data-dir or RETRODISTILL_DATA" in message


def test_unhosted_beir_dataset_fails_without_a_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(DatasetDownloadError, match="BEIR does not distribute 'robust04'"):
        resolve_dataset("robust04", tmp_path / "data")


@pytest.mark.parametrize("name", ["../escape", "/no/such/folder", "scifact.zip", "nfcorpus/sub"])
def test_non_names_are_missing_folders(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(FileNotFoundError, match="no such dataset folder, and not a BEIR dataset name"):
        resolve_dataset(name, tmp_path / "data")


def test_zip_without_top_folder_is_accepted(served: Path, toy_dir: Path, tmp_path: Path) -> None:
    _zip_folder(toy_dir, served / "flat.zip", top=None)
    path = resolve_dataset("flat", tmp_path / "data")
    assert path == tmp_path / "data" / "flat"
    assert (path / "qrels" / "test.tsv").is_file()


def test_unverifiable_download_that_does_not_load(served: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-src"
    (broken / "qrels").mkdir(parents=True)
    (broken / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "y"}\n')
    (broken / "queries.jsonl").write_text('{"_id": "q1", "text": "q"}\n')
    (broken / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    _zip_folder(broken, served / "broken.zip", top="broken")
    with pytest.raises(DatasetDownloadError, match=r"does not load: .*corpus\.jsonl:2: duplicate _id 'd1'"):
        resolve_dataset("broken", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_not_a_zip(served: Path, tmp_path: Path) -> None:
    (served / "junk.zip").write_bytes(b"<html>not a zip</html>")
    with pytest.raises(DatasetDownloadError, match="not a valid zip file"):
        resolve_dataset("junk", tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_nested_archive_sub_collection(
    served: Path, toy_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CQADupStack unpacks to one folder per forum; build a one-forum stand-in from the toy set.
    nested = tmp_path / "nested-src"
    shutil.copytree(toy_dir, nested / "android")
    _zip_folder(nested, served / "cqadupstack.zip", top="cqadupstack")
    monkeypatch.delitem(download.BEIR_MD5, "cqadupstack")
    collection = load_dataset("cqadupstack/android", "test", tmp_path / "data")
    assert collection.name == "cqadupstack/android"
    with pytest.raises(FileNotFoundError, match="cqadupstack holds: android"):
        resolve_dataset("cqadupstack/gis", tmp_path / "data")
