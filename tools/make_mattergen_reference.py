r"""Reference outputs of MatterGen 1.0.3's own code, for ``tests/test_mattergen_port.py``.

Runs in a SEPARATE environment (mattergen pins torch 2.2.1+cu118, numpy < 2, pytorch-lightning 2.0.6 and
needs torch_scatter / torch_sparse, none of which installs beside the kit). Build it once::

    python3 -m venv /work/mgref_venv
    /work/mgref_venv/bin/pip install torch==2.13.0            # the local CPU wheel (any other spec pulls CUDA)
    /work/mgref_venv/bin/pip install 'numpy<2' hydra-core==1.3.1 omegaconf==2.3.0 pytorch-lightning==2.0.6 \
        pymatgen ase tqdm torch_geometric emmet-core 'setuptools<70'
    pip download --no-deps mattergen==1.0.3 -d /work/mgref      # the wheel is the full source
    unzip -q -o /work/mgref/mattergen-1.0.3-py3-none-any.whl -d /work/mgref/src

then, from the repository root::

    /work/mgref_venv/bin/python tools/make_mattergen_reference.py --mattergen-src /work/mgref/src --self-test
    /work/mgref_venv/bin/python tools/make_mattergen_reference.py --mattergen-src /work/mgref/src

mattergen itself is imported from ``--mattergen-src`` unchanged, except that the wheel lacks
``common/gemnet/gemnet-dT.json`` (GemNet-T's scale factors, read by its constructor): it is copied in from
``../shared/data/mattergen_release/gemnet-dT.json`` (the file at the released commit).

torch_scatter and torch_sparse have no wheels here; pure-torch stand-ins with their documented semantics are
installed into ``sys.modules`` AFTER torch_geometric is imported (so PyG does not pick them up):

* ``torch_scatter.scatter(src, index, dim, out=None, dim_size=None, reduce="sum"|"add")`` (and
  ``scatter_add``): out[..., index[j], ...] += src[..., j, ...] along ``dim``, index broadcast to src,
  ``dim_size`` default index.max() + 1;
* ``torch_scatter.segment_coo(src, index, dim_size=None, reduce="sum")``: like scatter along the first index
  dimension for a sorted index;
* ``torch_scatter.segment_csr(src, indptr, reduce="sum")``: out[i] = Σ src[indptr[i]:indptr[i+1]];
* ``torch_sparse.SparseTensor(row, col, value, sparse_sizes)``: COO entries sorted by (row, col) with the same
  ``argsort`` torch_sparse's SparseStorage uses; ``adj[idx]`` (row selection) returns, for each i, the entries
  of row idx[i] in order with new row i; ``storage.value()``, ``storage.row()``, ``.to(device)``.

``--self-test`` checks each against the examples of torch_scatter's / torch_sparse's documentation.

What it writes (``tests/data/mattergen_reference/``, ≤ 2 MB):

* ``released_configs/<name>.yaml``: the nine released configs, unchanged (MIT licence beside them);
* ``state_dict_keys.json``: for each of the nine released configs at FULL size, every key and shape of the
  Lightning module's state dict (what the released ``last.ckpt`` holds), from the instantiated reference;
* ``<name>/config.yaml`` + ``<name>/checkpoints/last.ckpt``: six released configs at reduced width (hidden 8,
  see ``reduced_config``) with random weights (N(0, 0.5²/fan-in), seed 1; the output heads ×20 / ×2000 so that
  σ·score is of order 0.1–1 as in a trained model), in the released layout with a marker file
  ``RANDOM_WEIGHTS``; the checkpoint is a Lightning-style dict (``state_dict``, ``epoch``, ``global_step``,
  ``pytorch-lightning_version``, ``optimizer_states``, ``lr_schedulers``, ``callbacks``, ``loops``,
  ``hyper_parameters``);
* ``reference.npz``: the fixed batch (4 crystals: 1, 5, 4 and 20 atoms, some masked) and, for each model,
  t ∈ {0.01, 0.5, 0.99} and each condition state, ``diffusion_module.model(x, t)``'s ``pos``, ``cell`` and
  ``atomic_numbers`` and ``diffusion_module.score_fn``'s scores; at t = 0.5 also a per-crystal mix (crystals
  1 and 3 unconditional) and the classifier-free guided scores of ``GuidedPredictorCorrector._score_fn``
  (γ = 2); ``step/*``: one full guided predictor–corrector step of MatterGen's sampler with its recorded
  noise (``predictor_corrector_step``);
* ``cases.json``: what each array is (model, t, conditions).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
RELEASE = REPO.parent / "shared" / "data" / "mattergen_release"
OUT = REPO / "tests" / "data" / "mattergen_reference"
NAMES = ["mattergen_base", "mp_20_base", "chemical_system", "space_group", "dft_band_gap", "dft_mag_density",
         "ml_bulk_modulus", "chemical_system_energy_above_hull", "dft_mag_density_hhi_score"]
FIXTURE_MODELS = ["mattergen_base", "space_group", "chemical_system", "dft_band_gap", "ml_bulk_modulus",
                  "chemical_system_energy_above_hull"]
WIDTH = 8
WEIGHT_GAIN = 0.5
FORCE_HEAD_GAIN, LATTICE_HEAD_GAIN = 20.0, 2000.0
TIMES = [0.01, 0.5, 0.99]
GUIDANCE = 2.0
# the condition values per crystal (4 crystals) and the scaler statistics set on the random models
CONDITIONS = {"space_group": [225.0, 62.0, 194.0, 1.0], "chemical_system": ["Cu", "Li-Fe-P-O", "Si-O", "Na-Cl-K"],
              "dft_band_gap": [0.5, 1.5, 3.0, 0.0], "ml_bulk_modulus": [150.0, 80.0, 300.0, 10.0],
              "energy_above_hull": [0.0, 0.05, 0.2, 0.01]}
SCALER_STATS = {"dft_band_gap": (1.2, 1.4), "ml_bulk_modulus": (1.9, 0.35), "energy_above_hull": (0.1, 0.2)}


# ------------------------------------------------------------------------------------------------ stand-ins
def _scatter(src, index, dim=-1, out=None, dim_size=None, reduce="sum"):
    if reduce not in ("sum", "add"):
        raise NotImplementedError(f"stand-in scatter supports sum/add only, got {reduce}")
    dim = dim % src.dim()
    if index.dim() == 1 and src.dim() > 1:
        shape = [1] * src.dim()
        shape[dim] = -1
        index = index.reshape(shape)
    index = index.expand_as(src)
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() else 0
    size = list(src.shape)
    size[dim] = dim_size
    result = src.new_zeros(size) if out is None else out
    return result.scatter_add_(dim, index, src)


def _scatter_add(src, index, dim=-1, out=None, dim_size=None):
    return _scatter(src, index, dim=dim, out=out, dim_size=dim_size, reduce="sum")


def _segment_coo(src, index, out=None, dim_size=None, reduce="sum"):
    if index.numel() > 1 and bool((index[1:] < index[:-1]).any()):
        raise ValueError("segment_coo needs a sorted index")
    return _scatter(src, index, dim=index.dim() - 1, out=out, dim_size=dim_size, reduce=reduce)


def _segment_csr(src, indptr, out=None, reduce="sum"):
    if reduce not in ("sum", "add"):
        raise NotImplementedError
    counts = indptr[1:] - indptr[:-1]
    seg = torch.repeat_interleave(torch.arange(counts.numel(), device=src.device), counts)
    used = src[int(indptr[0]):int(indptr[-1])]
    result = src.new_zeros((counts.numel(),) + tuple(src.shape[1:]))
    return result.index_add_(0, seg, used)


class _Storage:
    def __init__(self, row, col, value):
        self._row, self._col, self._value = row, col, value

    def row(self):
        return self._row

    def col(self):
        return self._col

    def value(self):
        return self._value


class _SparseTensor:
    def __init__(self, row, col, value=None, sparse_sizes=None, is_sorted=False):
        n_cols = int(sparse_sizes[1])
        if not is_sorted:
            idx = row * n_cols + col                      # torch_sparse SparseStorage: argsort of row * N + col
            if idx.numel() > 1 and bool((idx[1:] < idx[:-1]).any()):
                perm = idx.argsort()
                row, col = row[perm], col[perm]
                value = None if value is None else value[perm]
        self.storage = _Storage(row, col, value)
        self.sparse_sizes = (int(sparse_sizes[0]), n_cols)

    def __getitem__(self, rows):
        row, col, value = self.storage.row(), self.storage.col(), self.storage.value()
        counts = torch.bincount(row, minlength=self.sparse_sizes[0])
        start = torch.cumsum(counts, 0) - counts
        take = counts[rows]
        new_row = torch.repeat_interleave(torch.arange(rows.numel(), device=rows.device), take)
        offset = torch.arange(int(take.sum()), device=rows.device) - torch.repeat_interleave(torch.cumsum(take, 0) - take, take)
        pick = torch.repeat_interleave(start[rows], take) + offset
        return _SparseTensor(new_row, col[pick], None if value is None else value[pick],
                             (rows.numel(), self.sparse_sizes[1]), is_sorted=True)

    def to(self, *args, **kwargs):
        return self


def install_stand_ins() -> None:
    import torch_geometric  # noqa: F401  (imported first: PyG must not see the stand-ins)
    import torch_geometric.typing  # noqa: F401

    scatter_mod = types.ModuleType("torch_scatter")
    scatter_mod.scatter, scatter_mod.scatter_add = _scatter, _scatter_add
    scatter_mod.segment_coo, scatter_mod.segment_csr = _segment_coo, _segment_csr
    sparse_mod = types.ModuleType("torch_sparse")
    sparse_mod.SparseTensor = _SparseTensor
    sys.modules["torch_scatter"], sys.modules["torch_sparse"] = scatter_mod, sparse_mod


def self_test() -> None:
    """The stand-ins against the documented examples / definitions."""
    # torch_scatter docs: src [[2,0,1,4,3],[0,2,1,3,4]], index [0,1,0,1,2,1] (README example, dim=-1)
    src = torch.tensor([[2., 0, 1, 4, 3], [0, 2, 1, 3, 4]])
    index = torch.tensor([[4, 5, 4, 2, 3], [0, 0, 2, 2, 1]])
    expected = torch.tensor([[0., 0, 4, 3, 3, 0], [2, 4, 4, 0, 0, 0]])
    assert torch.equal(_scatter(src, index, dim=-1, reduce="sum"), expected)
    # 1-D index along dim 0 broadcasts over trailing dims
    x = torch.arange(12.).reshape(6, 2)
    out = _scatter(x, torch.tensor([0, 1, 0, 1, 2, 1]), dim=0, dim_size=4)
    assert torch.equal(out, torch.tensor([[4., 6], [18, 21], [8, 9], [0, 0]]))
    assert torch.equal(_scatter_add(torch.ones(5), torch.tensor([0, 0, 2, 2, 2])), torch.tensor([2., 0, 3]))
    # segment_coo: sorted index; segment_csr: indptr (torch_scatter docs)
    assert torch.equal(_segment_coo(torch.ones(6, dtype=torch.long), torch.tensor([0, 0, 1, 1, 1, 3]), dim_size=5),
                       torch.tensor([2, 3, 0, 1, 0]))
    assert torch.equal(_segment_csr(torch.arange(6.), torch.tensor([0, 2, 5, 6])), torch.tensor([1., 9, 5]))
    # SparseTensor: entries sorted by (row, col); row selection keeps order and renumbers rows
    adj = _SparseTensor(row=torch.tensor([1, 0, 1, 2, 0]), col=torch.tensor([2, 1, 0, 1, 0]),
                        value=torch.arange(5), sparse_sizes=(3, 3))
    assert adj.storage.row().tolist() == [0, 0, 1, 1, 2] and adj.storage.col().tolist() == [0, 1, 0, 2, 1]
    assert adj.storage.value().tolist() == [4, 1, 2, 0, 3]
    sub = adj[torch.tensor([2, 0, 0])]
    assert sub.storage.row().tolist() == [0, 1, 1, 2, 2] and sub.storage.value().tolist() == [3, 4, 1, 4, 1]
    dense = torch.zeros(3, 3, dtype=torch.long)
    dense[adj.storage.row(), adj.storage.col()] = adj.storage.value() + 1
    assert dense.tolist() == [[5, 2, 0], [3, 0, 1], [0, 4, 0]]
    print("stand-ins: all documented examples reproduced")


# ------------------------------------------------------------------------------------------------ the batch
def fixed_crystals():
    """Four crystals (1, 5, 4, 20 atoms), fractional coords, lattices (rows, Å), atomic numbers (101 = mask)."""
    rng = np.random.default_rng(7)
    crystals = []
    # 1 atom: fcc Cu primitive cell
    a = 3.61 / 2
    crystals.append(([[0.0, a, a], [a, 0.0, a], [a, a, 0.0]], [[0.1, 0.2, 0.3]], [29]))
    # 5 atoms: a distorted perovskite with two masked atoms
    crystals.append(([[3.9, 0.1, 0.0], [0.0, 4.0, 0.2], [0.1, 0.0, 4.1]],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
                     [38, 101, 8, 101, 8]))
    # 4 atoms: random positions in a monoclinic cell, all masked (the start of sampling)
    crystals.append(([[4.2, 0.0, 0.0], [0.0, 4.9, 0.0], [-1.3, 0.0, 5.1]], rng.random((4, 3)).tolist(), [101] * 4))
    # 20 atoms: random triclinic cell, mixed elements and masks
    lat = np.diag([7.9, 8.6, 9.3]) + rng.normal(0, 0.6, (3, 3))
    z = rng.choice([3, 8, 14, 26, 15, 101], size=20).tolist()
    crystals.append((lat.tolist(), rng.random((20, 3)).tolist(), z))
    return crystals


def batch_arrays():
    crystals = fixed_crystals()
    pos = np.concatenate([np.asarray(c[1], dtype=np.float32) for c in crystals]) % 1.0
    cell = np.stack([np.asarray(c[0], dtype=np.float32) for c in crystals])
    z = np.concatenate([np.asarray(c[2], dtype=np.int64) for c in crystals])
    n = np.asarray([len(c[2]) for c in crystals], dtype=np.int64)
    return pos.astype(np.float32), cell, z, n


def reduced_config(cfg):
    """The released config at width 8, triplet/basis projections 4, 32 radial Gaussians (every other setting,
    among them the 4 blocks, cutoff 7 Å, 50 neighbours, 7 spherical harmonics, unchanged)."""
    cfg = copy.deepcopy(cfg)
    model = cfg["lightning_module"]["diffusion_module"]["model"]
    model["hidden_dim"] = WIDTH
    g = model["gemnet"]
    g["atom_embedding"]["emb_size"] = WIDTH
    for key in ("emb_size_atom", "emb_size_edge", "latent_dim"):
        g[key] = WIDTH
    for key in ("emb_size_trip", "emb_size_bil_trip", "emb_size_rbf", "emb_size_cbf"):
        g[key] = 4
    g["num_radial"] = 32
    for emb in (model.get("property_embeddings_adapt") or {}).values():
        for part in ("conditional_embedding_module", "unconditional_embedding_module"):
            for key in ("hidden_dim", "d_model"):
                if key in emb[part]:
                    emb[part][key] = WIDTH
    return cfg


# ------------------------------------------------------------------------------------------------ sampler step
STEP_MODEL = "dft_band_gap"
STEP_INDEX = 500            # grid index i of t_i = linspace(1, 1e-3, 1000)[i]


def predictor_corrector_step(out: Path, chemgraph_batch) -> dict:
    """One step (index STEP_INDEX of N = 1000) of MatterGen's guided predictor–corrector sampler, configured
    as ``sampling_conf/default.yaml`` (pos: WrappedLangevinCorrector snr 0.4 + WrappedAncestralSamplingPredictor;
    cell: LatticeLangevinDiffCorrector snr 0.2 + LatticeAncestralSamplingPredictor; atomic_numbers:
    D3PMAncestralSamplingPredictor(predict_x0=True); max_step_size 1e6; one corrector step; γ = 2;
    ``element_mask_func = mask_disallowed_elements`` as scripts/generate.py sets it), from the fixed batch with
    every atom masked. Every Gaussian draw (``torch.randn_like``) is recorded in order, and the posterior
    logits of the atom-type step; the loop runs step STEP_INDEX only (its ``tqdm`` iterator is replaced)."""
    from functools import partial

    import yaml
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import mattergen.diffusion.sampling.pc_sampler as pc_sampler
    from mattergen.common.diffusion.predictors_correctors import (LatticeAncestralSamplingPredictor,
                                                                  LatticeLangevinDiffCorrector)
    from mattergen.denoiser import mask_disallowed_elements
    from mattergen.diffusion.d3pm.d3pm_predictors_correctors import D3PMAncestralSamplingPredictor
    from mattergen.diffusion.sampling.classifier_free_guidance import GuidedPredictorCorrector
    from mattergen.diffusion.wrapped.wrapped_predictors_correctors import (WrappedAncestralSamplingPredictor,
                                                                           WrappedLangevinCorrector)
    from mattergen.property_embeddings import SetConditionalEmbeddingType, SetUnconditionalEmbeddingType

    cfg = yaml.safe_load((out / STEP_MODEL / "config.yaml").read_text())
    module = instantiate(OmegaConf.create(cfg["lightning_module"]))
    ckpt = torch.load(out / STEP_MODEL / "checkpoints" / "last.ckpt", weights_only=True)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    diffusion = module.diffusion_module
    diffusion.model.element_mask_func = mask_disallowed_elements
    sampler = GuidedPredictorCorrector(
        guidance_scale=GUIDANCE, remove_conditioning_fn=SetUnconditionalEmbeddingType(),
        keep_conditioning_fn=SetConditionalEmbeddingType(), diffusion_module=diffusion, device=torch.device("cpu"),
        predictor_partials={"pos": partial(WrappedAncestralSamplingPredictor),
                            "cell": partial(LatticeAncestralSamplingPredictor),
                            "atomic_numbers": partial(D3PMAncestralSamplingPredictor, predict_x0=True)},
        corrector_partials={"pos": partial(WrappedLangevinCorrector, snr=0.4, max_step_size=1e6),
                            "cell": partial(LatticeLangevinDiffCorrector, snr=0.2, max_step_size=1e6)},
        n_steps_corrector=1, N=1000, eps_t=1e-3)
    x = chemgraph_batch()
    x = x.replace(atomic_numbers=torch.full_like(x["atomic_numbers"], 101),
                  **{"dft_band_gap": torch.tensor(CONDITIONS["dft_band_gap"]).reshape(-1, 1)})

    noises, posterior_logits = [], []
    randn_like = torch.randn_like

    def recording_randn_like(tensor, *args, **kwargs):
        draw = randn_like(tensor, *args, **kwargs)
        noises.append(draw.clone())
        return draw

    categorical = torch.distributions.Categorical

    class RecordingCategorical(categorical):
        def __init__(self, probs=None, logits=None, validate_args=None):
            posterior_logits.append(logits.detach().clone())
            super().__init__(probs=probs, logits=logits, validate_args=validate_args)

    torch.manual_seed(3)
    torch.randn_like, torch.distributions.Categorical = recording_randn_like, RecordingCategorical
    pc_sampler.tqdm = lambda iterable, **kw: [STEP_INDEX]
    try:
        batch, mean_batch, _ = sampler._denoise(batch=x, mask={})
    finally:
        torch.randn_like, torch.distributions.Categorical = randn_like, categorical
    arrays = {f"step/noise_{i}": z.numpy() for i, z in enumerate(noises)}
    arrays["step/posterior_probs"] = torch.softmax(posterior_logits[-1].double(), dim=-1).numpy()
    for field in ("pos", "cell", "atomic_numbers"):
        arrays[f"step/sample_{field}"] = batch[field].numpy()
        arrays[f"step/mean_{field}"] = mean_batch[field].numpy()
    arrays["step/index"] = np.asarray(STEP_INDEX)
    print(f"predictor-corrector step {STEP_INDEX}: {len(noises)} Gaussian draws recorded")
    return arrays


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mattergen-src", required=True, help="folder holding the unpacked mattergen package")
    parser.add_argument("--self-test", action="store_true", help="only test the torch_scatter/torch_sparse stand-ins")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    torch.set_num_threads(1)
    install_stand_ins()
    self_test()
    if args.self_test:
        return
    src = Path(args.mattergen_src)
    scale_file = src / "mattergen" / "common" / "gemnet" / "gemnet-dT.json"
    if not scale_file.exists():
        shutil.copy(RELEASE / "gemnet-dT.json", scale_file)
    sys.path.insert(0, str(src))

    import yaml
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from mattergen.common.data.chemgraph import ChemGraph
    from mattergen.common.data.collate import collate
    from mattergen.diffusion.sampling.classifier_free_guidance import GuidedPredictorCorrector
    from mattergen.property_embeddings import (SetConditionalEmbeddingType, SetUnconditionalEmbeddingType,
                                               replace_use_unconditional_embedding)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. full-size key/shape lists of the nine released configs
    keys = {}
    for name in NAMES:
        cfg = yaml.safe_load((RELEASE / name / "config.yaml").read_text())
        torch.manual_seed(0)
        module = instantiate(OmegaConf.create(cfg["lightning_module"]))
        keys[name] = {k: list(v.shape) for k, v in module.state_dict().items()}
        print(name, len(keys[name]), "state-dict entries,",
              sum(p.numel() for p in module.parameters()), "parameters")
        del module
    base = keys["mattergen_base"]
    compact = {"common": base, "models": {name: {"extra": {k: v for k, v in entry.items() if k not in base},
                                                 "missing": sorted(k for k in base if k not in entry)}
                                          for name, entry in keys.items()}}
    (out / "released_configs").mkdir(exist_ok=True)
    for name in NAMES:
        shutil.copy(RELEASE / name / "config.yaml", out / "released_configs" / f"{name}.yaml")
    shutil.copy(RELEASE / "LICENSE-MIT.txt", out / "released_configs" / "LICENSE-MIT.txt")
    (out / "state_dict_keys.json").write_text(json.dumps(compact, separators=(",", ":"), sort_keys=True) + "\n")

    # 2. reduced-width random models in the released layout, and their outputs
    pos, cell, z, n = batch_arrays()
    arrays = {"pos": pos, "cell": cell, "atomic_numbers": z, "num_atoms": n}
    cases = []

    def chemgraph_batch():
        graphs, start = [], 0
        for b, count in enumerate(n.tolist()):
            graphs.append(ChemGraph(pos=torch.from_numpy(pos[start:start + count]),
                                    cell=torch.from_numpy(cell[b:b + 1]),
                                    atomic_numbers=torch.from_numpy(z[start:start + count]),
                                    num_atoms=torch.tensor([count])))
            start += count
        return collate(graphs)

    for name in FIXTURE_MODELS:
        cfg = reduced_config(yaml.safe_load((RELEASE / name / "config.yaml").read_text()))
        torch.manual_seed(0)
        module = instantiate(OmegaConf.create(cfg["lightning_module"]))
        with torch.no_grad():                   # random weights everywhere (the zero-initialised mixins too)
            gen = torch.Generator().manual_seed(1)
            for key, p in module.named_parameters():     # std gain / sqrt(fan-in): activations of order 1
                if "scale_factor" not in key:
                    fan_in = p.numel() // p.shape[0] if p.ndim > 1 else 1
                    p.copy_(torch.randn(p.shape, generator=gen) * WEIGHT_GAIN / fan_in ** 0.5)
                    # output heads scaled so that σ·score is of order 0.1–1, as in a trained model (a tiny
                    # score makes the Langevin corrector's step 2(snr‖z‖/‖s‖)² explode the lattice)
                    if key.endswith("out_forces.linear.weight"):
                        p.mul_(LATTICE_HEAD_GAIN if ".lattice_out_blocks." in key else FORCE_HEAD_GAIN)
            for key, buf in module.named_buffers():
                for prop, (mean, std) in SCALER_STATS.items():
                    if f"property_embeddings_adapt.{prop}.scaler.means" in key:
                        buf.fill_(mean)
                    if f"property_embeddings_adapt.{prop}.scaler.stds" in key:
                        buf.fill_(std)
        module.eval()
        folder = out / name
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        (folder / "RANDOM_WEIGHTS").write_text("random weights written by tools/make_mattergen_reference.py, not "
                                               "MatterGen's released weights: no published fingerprint applies\n")
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-4)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.6, patience=100, min_lr=1e-6)
        checkpoint = {"epoch": 3, "global_step": 12, "pytorch-lightning_version": "2.0.6",
                      "state_dict": OrderedDict(module.state_dict()), "loops": {"fit_loop": {"state_dict": {}}},
                      "callbacks": {"ModelCheckpoint{'monitor': 'loss_val'}": {"best_model_score": torch.tensor(1.5),
                                                                              "best_model_path": "epoch=3.ckpt"}},
                      "optimizer_states": [optimizer.state_dict()], "lr_schedulers": [scheduler.state_dict()],
                      "hparams_name": "kwargs", "hyper_parameters": {}}
        torch.save(checkpoint, folder / "checkpoints" / "last.ckpt")

        diffusion = module.diffusion_module
        model = diffusion.model
        properties = list(cfg["lightning_module"]["diffusion_module"]["model"].get("property_embeddings_adapt") or {})
        states = [("uncond", {}, None)]
        if len(properties) == 1:
            states.append((f"cond_{properties[0]}", {properties[0]: CONDITIONS[properties[0]]}, None))
        if len(properties) > 1:
            states.append(("cond_all", {p: CONDITIONS[p] for p in properties}, None))
        if properties:                            # per-crystal: crystals 1 and 3 unconditional (t = 0.5 only)
            states.append(("mixed", {p: CONDITIONS[p] for p in properties}, [False, True, False, True]))

        for t_value in TIMES:
            t = torch.full((len(n),), t_value)
            for label, conds, uncond_rows in states:
                if uncond_rows is not None and t_value != 0.5:
                    continue
                x = chemgraph_batch()
                if conds:
                    x = x.replace(**{p: (v if isinstance(v[0], str) else torch.tensor(v).reshape(-1, 1))
                                     for p, v in conds.items()})
                    x = SetConditionalEmbeddingType()(x)
                    if uncond_rows is not None:
                        x = replace_use_unconditional_embedding(
                            x, {p: torch.tensor(uncond_rows).reshape(-1, 1) for p in conds})
                with torch.no_grad():
                    raw = model(x, t)
                    score = diffusion.score_fn(x, t)
                tag = f"{name}/{label}/t{t_value}"
                arrays[f"{tag}/pos"] = raw["pos"].numpy()
                arrays[f"{tag}/cell"] = raw["cell"].numpy()
                arrays[f"{tag}/atomic_numbers"] = raw["atomic_numbers"].numpy()
                arrays[f"{tag}/score_pos"] = score["pos"].numpy()
                arrays[f"{tag}/score_cell"] = score["cell"].numpy()
                cases.append({"tag": tag, "model": name, "t": t_value, "conditions": conds,
                              "unconditional_rows": uncond_rows})
                if conds and uncond_rows is None and t_value == 0.5:   # classifier-free guidance, γ = 2
                    sampler = GuidedPredictorCorrector.__new__(GuidedPredictorCorrector)
                    sampler._diffusion_module = diffusion
                    sampler._guidance_scale = GUIDANCE
                    sampler._remove_conditioning_fn = SetUnconditionalEmbeddingType()
                    sampler._keep_conditioning_fn = SetConditionalEmbeddingType()
                    with torch.no_grad():
                        guided = sampler._score_fn(x, t)
                    for field in ("pos", "cell", "atomic_numbers"):
                        arrays[f"{tag}/guided_{field}"] = guided[field].numpy()
        print(name, "written")
    arrays.update(predictor_corrector_step(out, chemgraph_batch))
    np.savez_compressed(out / "reference.npz", **arrays)
    (out / "cases.json").write_text(json.dumps({"width": WIDTH, "times": TIMES, "guidance_scale": GUIDANCE,
                                                "scaler_stats": SCALER_STATS, "cases": cases}, indent=1) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"fixture: {total / 1e6:.2f} MB in {out}")


if __name__ == "__main__":
    main()
