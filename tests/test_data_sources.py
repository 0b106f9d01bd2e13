"""Source files (issue 23): the raw MP-20 / MPTS-52 CSVs are fetched on demand, verified, and not needed offline."""

import shutil
from pathlib import Path

import pytest

from mattergen_kit.cli import main
from mattergen_kit.data.paths import (CHECKOUT_DATA, SOURCE_FILES, DataIntegrityError, SourceFilesMissing,
                                      missing_sources, read_sha256sums, sha256_file)

REPO = Path(__file__).resolve().parents[1]


def _real_sources() -> Path | None:
    """A folder holding the genuine source files: the checkout's (after `fetch-data sources`) or ../shared/data."""
    for folder in (CHECKOUT_DATA, REPO.parent / "shared" / "data"):
        if all((folder / rel).is_file() for rel in SOURCE_FILES):
            return folder
    return None


@pytest.fixture
def clone_without_sources(tmp_path, monkeypatch):
    """A copy of datasets/ as a fresh clone has it (no source files), with an empty cache."""
    root = tmp_path / "datasets"
    shutil.copytree(CHECKOUT_DATA, root, ignore=shutil.ignore_patterns("cache", "mp20", *{r.split("/")[0] for r in SOURCE_FILES}))
    monkeypatch.setenv("MATTERGEN_KIT_DATA", str(root))
    monkeypatch.setenv("MATTERGEN_KIT_CACHE", str(tmp_path / "cache"))
    return root


def test_sources_are_recorded_but_not_tracked():
    sums = read_sha256sums(CHECKOUT_DATA)
    assert set(SOURCE_FILES) <= set(sums)
    ignored = (REPO / ".gitignore").read_text()
    assert all(f"datasets/{rel.split('/')[0]}/" in ignored for rel in SOURCE_FILES)


def test_the_bundled_set_loads_offline_without_source_files(clone_without_sources):
    from mattergen_kit.datasets import load_bundled

    assert sorted(missing_sources()) == sorted(SOURCE_FILES)
    train = load_bundled("train", progress=False)  # the shipped precomputed set, keyed by the recorded digests
    assert len(train) == 13459
    with pytest.raises(SourceFilesMissing, match="fetch-data sources"):
        load_bundled("train", max_atoms=52, progress=False)


def test_info_says_whether_the_sources_are_fetched(clone_without_sources, capsys):
    assert main(["info"]) == 0
    assert "0 of 4 fetched; `mattergen-kit fetch-data sources`" in capsys.readouterr().out


def test_fetch_sources_from_a_folder_checks_every_file(clone_without_sources, tmp_path):
    bad = tmp_path / "mirror"
    for rel in SOURCE_FILES:
        (bad / rel).parent.mkdir(parents=True, exist_ok=True)
        (bad / rel).write_bytes(b"not the file")
    assert main(["fetch-data", "sources", "--from", str(bad)]) == 2  # refused, nothing copied
    assert sorted(missing_sources()) == sorted(SOURCE_FILES)
    assert main(["fetch-data", "sources", "--from", str(tmp_path / "nowhere")]) == 2
    real = _real_sources()
    if real is None:
        pytest.skip("no copy of the source files on this machine (run `mattergen-kit fetch-data sources`)")
    assert main(["fetch-data", "sources", "--from", str(real)]) == 0
    assert missing_sources() == []
    sums = read_sha256sums(clone_without_sources)
    assert all(sha256_file(clone_without_sources / rel) == sums[rel] for rel in SOURCE_FILES)
    target = clone_without_sources / "mpts_52" / "val.csv.gz"  # a damaged fetched copy says how to recover
    target.write_bytes(target.read_bytes()[:1000])
    from mattergen_kit.data.paths import verify_file

    with pytest.raises(DataIntegrityError, match="Delete it and fetch it with `mattergen-kit fetch-data sources`"):
        verify_file("mpts_52/val.csv.gz")
