"""generate() / load_model() / `mattergen-kit generate` with the bundled model shipped in the package."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import mattergen_kit as mk
from mattergen_kit.diffusion.atom_types import ALLOWED_Z
from mattergen_kit.generation import BUNDLED_CHECKPOINT
from mattergen_kit.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

STEPS = 20  # tiny settings: these tests check the pipeline, benchmarks/ measure quality


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return mk.load_model()


def test_bundled_model_is_shipped_with_a_model_card():
    assert BUNDLED_CHECKPOINT.is_file()
    assert BUNDLED_CHECKPOINT.stat().st_size < 30 * 2**20
    card = BUNDLED_CHECKPOINT.with_name("MODEL_CARD.md")
    text = card.read_text()
    meta = load_checkpoint(BUNDLED_CHECKPOINT)["meta"]
    for needed in ("mp-bundled-20", "val", "commit", meta["reproduce"]):   # the card shows how to retrain it
        assert needed in text
    assert "mattergen_kit.training.fast" in meta["reproduce"] or "mattergen-kit train" in meta["reproduce"]
    assert meta["global_step"] > 1000
    assert abs(sum(meta["num_atoms_histogram"]) - 1) < 1e-6


def test_generate_returns_structures_with_allowed_elements(model):
    structures = model.generate(6, seed=1, steps=STEPS, progress=False)
    assert len(structures) == 6
    for s in structures:
        assert 1 <= len(s) <= 20
        assert {site.specie.Z for site in s} <= set(ALLOWED_Z)  # no mask token, no disallowed element
        assert np.isfinite(s.lattice.matrix).all() and s.volume > 0


def test_same_seed_same_crystals_other_seed_other_crystals(model):
    a = model.sample(4, seed=7, steps=STEPS, progress=False)
    b = model.sample(4, seed=7, steps=STEPS, progress=False)
    c = model.sample(4, seed=8, steps=STEPS, progress=False)
    assert torch.equal(a.atom_types, b.atom_types) and torch.equal(a.frac_coords, b.frac_coords)
    assert not (a.num_atoms.tolist() == c.num_atoms.tolist() and torch.equal(a.atom_types, c.atom_types))


def test_batches_do_not_change_the_result_of_later_crystals(model):
    """Each batch draws from its own seed: generating 5 in batches of 2 gives the same first 2 as 2 alone."""
    five = model.sample(5, seed=3, steps=STEPS, batch_size=2, progress=False)
    assert five.num_crystals == 5
    two = model.sample(2, seed=3, steps=STEPS, batch_size=2, progress=False)
    assert torch.equal(five.num_atoms[:2], two.num_atoms)
    assert torch.equal(five.atom_types[: int(two.num_atoms.sum())], two.atom_types)


def test_allowed_elements_restricts_the_chemistry(model):
    structures = model.generate(4, seed=0, steps=STEPS, allowed_elements=["Li", "Fe", "P", "O"], progress=False)
    for s in structures:
        assert {el.symbol for el in s.composition} <= {"Li", "Fe", "P", "O"}


@pytest.mark.parametrize("bad", [0, -3])
def test_bad_arguments_are_clear_errors(model, bad):
    with pytest.raises(ValueError, match="num"):
        model.generate(bad, steps=STEPS)
    with pytest.raises(ValueError, match="steps"):
        model.generate(2, steps=1)


def test_corrupted_foreign_and_future_checkpoints_are_rejected(tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(BUNDLED_CHECKPOINT.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        mk.load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a mattergen_kit checkpoint"):
        mk.load_model(foreign)
    ckpt = load_checkpoint(BUNDLED_CHECKPOINT)
    future = tmp_path / "future.pt"
    torch.save({**ckpt, "version": 99}, future)
    with pytest.raises(CheckpointError, match="version 99"):
        mk.load_model(future)
    no_prior = tmp_path / "no_prior.pt"
    meta = {k: v for k, v in ckpt["meta"].items() if k != "num_atoms_histogram"}
    save_checkpoint(no_prior, ckpt["model_config"], ckpt["state_dict"], ckpt["diffusion_config"], meta)
    with pytest.raises(CheckpointError, match="number-of-atoms prior"):
        mk.load_model(no_prior)
    with pytest.raises(FileNotFoundError):
        mk.load_model(tmp_path / "missing.pt")


def test_cli_generate_writes_cifs_table_and_picture(tmp_path):
    from pymatgen.core import Structure

    out = tmp_path / "gen"
    result = subprocess.run([sys.executable, "-m", "mattergen_kit.cli", "generate", "--num", "3", "--out", str(out),
                             "--seed", "0", "--steps", str(STEPS)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    cifs = sorted(out.glob("*.cif"))
    assert len(cifs) == 3
    for cif in cifs:
        assert len(Structure.from_file(cif)) >= 1
    assert (out / "grid.png").stat().st_size > 1000
    assert len((out / "summary.csv").read_text().strip().splitlines()) == 4
    assert "wrote 3 CIFs" in result.stdout


def test_cli_reports_a_corrupt_model_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    result = subprocess.run([sys.executable, "-m", "mattergen_kit.cli", "generate", "--out", str(tmp_path / "o"),
                             "--model", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
