"""Two CPU processes (gloo, ddp_spawn): gradients are all-reduced and weights + EMA stay identical."""
import json

import lightning as L
import pytest
import torch

from mattergen_kit.model import DenoiserConfig
from mattergen_kit.training import TrainConfig, load_checkpoint, train


class SyncCheck(L.Callback):
    """Gathers a checksum of grads (before each optimiser step) and of weights/EMA (at the end) from all
    ranks; rank 0 writes them to ``out``."""

    def __init__(self, out):
        self.out, self.grads = out, []

    @staticmethod
    def _gather(trainer, tensors):
        flat = torch.cat([t.detach().reshape(-1) for t in tensors]).double()
        return trainer.strategy.all_gather(torch.stack([flat.sum(), flat.abs().sum(), (flat ** 2).sum()]))

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.grads.append(self._gather(trainer, [p.grad for p in module.denoiser.parameters()]).tolist())

    def on_train_end(self, trainer, module):
        weights = self._gather(trainer, list(module.denoiser.parameters())).tolist()
        ema = self._gather(trainer, list(module.ema.parameters())).tolist()
        if trainer.is_global_zero:
            with open(self.out, "w") as f:
                json.dump({"world": trainer.world_size, "grads": self.grads, "weights": weights, "ema": ema}, f)


def _items():
    from pymatgen.core import Lattice, Structure

    from mattergen_kit.data.crystal_batch import CrystalBatch

    return [CrystalBatch.from_structures([Structure(Lattice.cubic(3.0 + 0.2 * i), ["Na", "Cl", "Cl"],
                                                    [[0, 0, 0], [0.5, 0.5, 0.5], [0.1 * i, 0.2, 0.3]])])
            for i in range(16)]


@pytest.mark.timeout(240)
def test_two_process_cpu_ddp(tmp_path):
    from mattergen_kit.training import CrystalDataModule

    cfg = TrainConfig(run_dir=str(tmp_path / "run"), model=DenoiserConfig(hidden_dim=16, num_layers=1), batch_size=4,
                      warmup_steps=1,
                      max_steps=2, max_epochs=1, val_every_n_epochs=1, ckpt_every_n_steps=1000,
                      progress_bar=False, accelerator="cpu", devices=2, strategy="ddp_spawn", num_threads=1)
    out = tmp_path / "sync.json"
    items = _items()
    path = train(cfg, datamodule=CrystalDataModule(cfg, items, items[:8]), callbacks=[SyncCheck(str(out))])
    result = json.loads(out.read_text())
    assert result["world"] == 2 and len(result["grads"]) == 2
    for step in result["grads"]:  # each rank saw different crystals, the all-reduced grads are equal
        assert step[0] == pytest.approx(step[1], rel=1e-6, abs=1e-9)
    assert result["weights"][0] == pytest.approx(result["weights"][1], rel=1e-7)
    assert result["ema"][0] == pytest.approx(result["ema"][1], rel=1e-7)
    assert load_checkpoint(path)["meta"]["global_step"] == 2
