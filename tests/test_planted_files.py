"""Issue 24: no code runs from a file the kit reads (planted Lightning checkpoints, monty class dispatch in JSON)."""

from __future__ import annotations

import builtins
import re
import sys
from pathlib import Path

import pytest
import torch

from mattergen_kit import cli
from mattergen_kit.model.checkpoint import CheckpointError, load_checkpoint
from mattergen_kit.training import export_lightning_checkpoint, train
from mattergen_kit.training.fit import build_trainer
from mattergen_kit.training.lightning_checkpoint import load_lightning_checkpoint
from mattergen_kit.training.module import DiffusionModule

sys.path.insert(0, str(Path(__file__).parent))
from test_training_resume import config as tiny_config, datamodule as tiny_datamodule  # noqa: E402

PACKAGE = Path(__file__).resolve().parent.parent / "mattergen_kit"


class Payload:
    """Unpickling this calls builtins.open(marker, "w"): the marker file appears iff code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def plant(path: Path, marker: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": {"config": {}, "adapter": Payload(marker)}, "global_step": 5},
               path)
    return path


def test_train_refuses_a_planted_last_ckpt(tmp_path):
    marker = tmp_path / "pwned"
    cfg = tiny_config(str(tmp_path / "run"))
    plant(tmp_path / "run" / "checkpoints" / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match=r"last\.ckpt names objects that could run code.*\bio\.open"):
        train(cfg, datamodule=tiny_datamodule(cfg))
    assert not marker.exists()


def test_lightning_resume_itself_reads_through_the_allow_list(tmp_path):
    """trainer.fit(ckpt_path=...) of the kit's Trainer (not only train()'s early check) refuses the file."""
    marker = tmp_path / "pwned"
    cfg = tiny_config(str(tmp_path / "run"))
    planted = plant(tmp_path / "elsewhere.ckpt", marker)
    trainer = build_trainer(cfg)
    with pytest.raises(CheckpointError, match="could run code"):
        trainer.fit(DiffusionModule(cfg), datamodule=tiny_datamodule(cfg), ckpt_path=str(planted))
    assert not marker.exists()


def test_cli_train_and_finetune_refuse_a_planted_last_ckpt(tmp_path, capsys):
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    plant(run_dir / "checkpoints" / "last.ckpt", marker)
    code = cli.main(["train", "--config", "configs/tiny_test.yaml", "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "could run code" in err[0], err
    assert not marker.exists()


def test_export_refuses_a_planted_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    planted = plant(tmp_path / "last.ckpt", marker)
    with pytest.raises(CheckpointError, match="could run code"):
        export_lightning_checkpoint(planted, tmp_path / "model.pt")
    assert not marker.exists() and not (tmp_path / "model.pt").exists()


@pytest.mark.timeout(240)
def test_a_kit_written_checkpoint_loads_resumes_and_exports(tmp_path):
    """The allow-list is wide enough for the kit's own files: a real run resumes and exports through it."""
    cfg = tiny_config(str(tmp_path / "run"))
    cfg.max_steps = 10
    train(cfg, datamodule=tiny_datamodule(cfg))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    raw = load_lightning_checkpoint(last)
    assert raw["global_step"] == 10 and raw["hyper_parameters"]["config"]["run_dir"] == cfg.run_dir
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(last)) == []  # what the allow-list was sized on
    out = export_lightning_checkpoint(last, tmp_path / "model.pt")
    assert load_checkpoint(out)["meta"]["global_step"] == 10
    cfg.max_steps = 12  # resume: through trainer.fit(ckpt_path=last) and the allow-list IO
    path = train(cfg, datamodule=tiny_datamodule(cfg))
    assert load_checkpoint(path)["meta"]["global_step"] == 12


def test_no_weights_only_false_anywhere_in_the_package():
    """Static: every torch.load in mattergen_kit/ says weights_only=True; weights_only=False appears nowhere."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        rel = path.relative_to(PACKAGE).as_posix()
        if re.search(r"weights_only\s*=\s*False", text):
            found.append(f"{rel}: weights_only=False")
        for call in re.findall(r"torch\.load\(([^)]*)\)", text):
            if not re.search(r"weights_only\s*=\s*True", call):
                found.append(f"{rel}: torch.load({call})")
    assert not found, found
