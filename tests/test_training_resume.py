"""Resume after a hard kill: the step counter continues from last.ckpt and the EMA weights are restored."""
import os
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch

from mattergen_kit.model import DenoiserConfig
from mattergen_kit.training import CrystalDataModule, TrainConfig, load_checkpoint, train

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import lightning as L
    sys.path.insert(0, {tests!r})
    from test_training_resume import config, datamodule
    from mattergen_kit.training import train

    class KillAt(L.Callback):  # SIGKILL mid-run, after the step-10 checkpoint and before the step-20 one
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 15:
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = config({run_dir!r})
    train(cfg, datamodule=datamodule(cfg), callbacks=[KillAt()])
""")


def config(run_dir):
    return TrainConfig(run_dir=run_dir, model=DenoiserConfig(hidden_dim=16, num_layers=1), batch_size=8, limit_train=64,
                       limit_val=16,
                       warmup_steps=2, max_steps=30, max_epochs=100, ckpt_every_n_steps=10, log_every_n_steps=5,
                       val_every_n_epochs=100, progress_bar=False, num_threads=1)


def datamodule(cfg):
    from mattergen_kit.data.crystal_batch import CrystalBatch
    from pymatgen.core import Lattice, Structure

    structures = [Structure(Lattice.cubic(3.0 + 0.1 * i), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5 - 0.01 * i]])
                  for i in range(16)]
    items = [CrystalBatch.from_structures([s]) for s in structures] * 4
    return CrystalDataModule(cfg, items, items[:16])


class Check(L.Callback):
    def __init__(self, last_ckpt):
        self.saved = torch.load(last_ckpt, map_location="cpu", weights_only=False)
        self.start_step = None

    def on_train_start(self, trainer, module):
        self.start_step = trainer.global_step
        for key, value in module.ema.state_dict().items():
            torch.testing.assert_close(value, self.saved["state_dict"]["ema." + key])
        # the EMA is its own state, not a copy of the live weights
        assert any(not torch.equal(a, b) for a, b in zip(module.ema.parameters(), module.denoiser.parameters()))


@pytest.mark.timeout(180)
def test_resume_after_sigkill(tmp_path):
    run_dir = str(tmp_path / "run")
    script = tmp_path / "killed_run.py"
    script.write_text(SCRIPT.format(tests=os.path.dirname(__file__), run_dir=run_dir))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=150)
    assert proc.returncode == -9, proc.stderr[-3000:]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.exists() and not (tmp_path / "run" / "model.pt").exists()
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 10

    cfg = config(run_dir)
    check = Check(last)
    path = train(cfg, datamodule=datamodule(cfg), callbacks=[check])
    assert check.start_step == 10
    assert load_checkpoint(path)["meta"]["global_step"] == 30
