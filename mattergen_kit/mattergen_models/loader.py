"""MatterGen's released models as the kit's :class:`~mattergen_kit.generation.GenerativeModel`.

>>> import mattergen_kit as mk
>>> model = mk.load_mattergen("space_group")                 # doctest: +SKIP  (or a folder in the released layout)
>>> crystals = model.generate(8, seed=0, conditions={"space_group": 225}, guidance_scale=2.0)   # doctest: +SKIP

What is converted, and how (docs/mattergen_compat.md):

* the network: :class:`~mattergen_kit.model.mattergen.MatterGenDenoiser` (the port) wrapped by
  :class:`MatterGenKitDenoiser`, which takes the kit's ``model(noisy: CrystalBatch, t, conditions, use_condition)``
  and returns a ``DenoiserOutput``. The conventions are the same on both sides — fractional coordinates, lattice
  rows in Å, atom-type class Z − 1 with 100 the mask, coordinate and lattice outputs σ·score (MatterGen's model
  target ``score_times_std``, with the same σ(t; N) and std(t; N); tests/test_mattergen_port.py checks the
  scores) — so the outputs pass through unchanged;
* the diffusion: the config's corruption block is read and must equal the kit's processes exactly (D3PM
  absorbing, 101 classes, 1000 steps; wrapped VE σ ∈ [0.01, 5] scaled by N^{-1/3}; lattice VP β ∈ [0.1, 20],
  density, variance scale); any other value is refused, naming the field;
* the number-of-atoms prior: MatterGen's Alex-MP-20 histogram (``NumAtomsPrior.alex_mp_20``), the only one
  MatterGen 1.0.3's generator has (it uses it for mp_20_base too) — pass ``num_atoms`` to choose N;
* the sampler: the kit's predictor–corrector sampler with MatterGen's settings (1000 steps, snr 0.4/0.2, one
  corrector step, τ = 1, no coherence bias, no remasking) and guidance u + γ(c − u) on the three outputs;
* property names: MatterGen's (``dft_band_gap``, ``ml_bulk_modulus``, …) and the kit's (``band_gap``,
  ``bulk_modulus``, …) are both accepted; ``property_specs`` lists the kit's names.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml
from torch import nn

from mattergen_kit.conditioning.properties import PropertySpec, get_spec
from mattergen_kit.data import CrystalBatch
from mattergen_kit.diffusion import CrystalDiffusion
from mattergen_kit.diffusion.atom_types import MaskDiffusion
from mattergen_kit.diffusion.coords import SIGMA_MAX, SIGMA_MIN, WrappedVESDE
from mattergen_kit.diffusion.joint import DenoiserOutput
from mattergen_kit.diffusion.lattice import BETA_MAX, BETA_MIN, LIMIT_VAR_SCALE, LatticeVPSDE
from mattergen_kit.generation import GenerativeModel
from mattergen_kit.mattergen_models.files import load_lightning_checkpoint, resolve_model
from mattergen_kit.model.mattergen import (MatterGenDenoiser, UnsupportedConfigError, build_denoiser,
                                           chemical_system_multi_hot, denoiser_state_dict, kit_name, parse_config,
                                           resolve_property_name)
from mattergen_kit.sampling import NumAtomsPrior

MATTERGEN_SAMPLER_META = {"recommended_steps": 1000, "type_temperature": 1.0}
_ROOT = "lightning_module.diffusion_module.corruption"


class AliasedSpecs(dict):
    """{kit name: PropertySpec} that also answers to MatterGen's names (``"dft_band_gap" in specs``)."""

    def __init__(self, specs: Mapping[str, PropertySpec], aliases: Mapping[str, str]):
        super().__init__(specs)
        self.aliases = dict(aliases)          # MatterGen name → kit name

    def _key(self, name):
        return self.aliases.get(name, name)

    def __contains__(self, name) -> bool:
        return super().__contains__(self._key(name))

    def __getitem__(self, name) -> PropertySpec:
        return super().__getitem__(self._key(name))

    def get(self, name, default=None):
        return super().get(self._key(name), default)


class MatterGenKitDenoiser(nn.Module):
    """The kit's denoiser signature around the port: ``model(noisy, t, conditions, use_condition)``."""

    def __init__(self, net: MatterGenDenoiser):
        super().__init__()
        self.net = net

    @property
    def property_names(self) -> list[str]:
        return self.net.property_names

    def encode(self, conditions: Mapping[str, Any] | None, use_condition: torch.Tensor | None, num: int, device):
        """Kit conditions ({name: (B,) tensor with NaN = absent | list of str/None}) → the port's values and
        per-crystal use masks (a crystal uses property p when use_condition[b] and it has a value)."""
        values, use = {}, {}
        wanted = (torch.ones(num, dtype=torch.bool, device=device) if use_condition is None
                  else use_condition.to(device).bool())
        for name, value in (conditions or {}).items():
            key = resolve_property_name(name, self.net.property_names)
            kind = next(p.kind for p in self.net.config.properties if p.name == key)
            if kind == "chemical_system":
                hot, present = chemical_system_multi_hot(value, num, device)
                values[key], use[key] = hot, present & wanted
            else:
                v = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1)
                v = v.expand(num).clone() if v.numel() == 1 else v
                values[key], use[key] = v, ~torch.isnan(v) & wanted
        return values, use

    def forward(self, noisy: CrystalBatch, t: torch.Tensor, conditions: dict | None = None,
                use_condition: torch.Tensor | None = None) -> DenoiserOutput:
        B = noisy.num_atoms.shape[0]
        values, use = self.encode(conditions, use_condition, B, noisy.lattice.device)
        out = self.net(noisy.frac_coords, noisy.lattice, noisy.atom_types, noisy.num_atoms, t.to(noisy.lattice.dtype),
                       values, use)
        return DenoiserOutput(type_logits=out["atomic_numbers"], coord_score=out["pos"], lattice_score=out["cell"])


class MatterGenModel(GenerativeModel):
    """A released MatterGen model: the kit's GenerativeModel with MatterGen's property names."""

    @property
    def property_specs(self) -> dict:
        names = self.denoiser.property_names
        specs = {}
        for name in names:
            base = get_spec(kit_name(name))
            specs[kit_name(name)] = replace(base, description=f"MatterGen's {name}: {base.description}")
        return AliasedSpecs(specs, {name: kit_name(name) for name in names})


def _check_equal(value, expected, field: str, why: str = "the kit's process differs") -> None:
    if isinstance(expected, float) and isinstance(value, (int, float)):
        same = abs(float(value) - expected) <= 1e-12 * max(1.0, abs(expected))
    else:
        same = value == expected
    if not same:
        raise UnsupportedConfigError(field, value, f"{why} (the kit uses {expected!r})")


def diffusion_from_config(config: Mapping) -> CrystalDiffusion:
    """The kit's CrystalDiffusion for a released config; refuses any corruption setting it cannot honour."""
    try:
        corruption = config["lightning_module"]["diffusion_module"]["corruption"]
    except (KeyError, TypeError):
        raise UnsupportedConfigError(_ROOT, None, "missing") from None
    _check_equal(corruption.get("_target_"), "mattergen.diffusion.corruption.multi_corruption.MultiCorruption",
                 f"{_ROOT}._target_")
    discrete = corruption.get("discrete_corruptions") or {}
    _check_equal(sorted(discrete), ["atomic_numbers"], f"{_ROOT}.discrete_corruptions")
    d3pm_root = f"{_ROOT}.discrete_corruptions.atomic_numbers"
    types = discrete["atomic_numbers"]
    _check_equal(types.get("_target_"), "mattergen.diffusion.corruption.d3pm_corruption.D3PMCorruption",
                 f"{d3pm_root}._target_")
    _check_equal(types.get("offset"), 1, f"{d3pm_root}.offset")
    d3pm = types.get("d3pm") or {}
    _check_equal(d3pm.get("_target_"), "mattergen.diffusion.d3pm.d3pm.MaskDiffusion", f"{d3pm_root}.d3pm._target_")
    _check_equal(d3pm.get("dim"), 101, f"{d3pm_root}.d3pm.dim")
    schedule = d3pm.get("schedule") or {}
    _check_equal(schedule.get("kind"), "standard", f"{d3pm_root}.d3pm.schedule.kind")
    _check_equal(schedule.get("num_steps"), 1000, f"{d3pm_root}.d3pm.schedule.num_steps")
    sdes = corruption.get("sdes") or {}
    _check_equal(sorted(sdes), ["cell", "pos"], f"{_ROOT}.sdes")
    cell = sdes["cell"]
    _check_equal(cell.get("_target_"), "mattergen.common.diffusion.corruption.LatticeVPSDE.from_vpsde_config",
                 f"{_ROOT}.sdes.cell._target_")
    vp = cell.get("vpsde_config") or {}
    _check_equal(float(vp.get("beta_min")), BETA_MIN, f"{_ROOT}.sdes.cell.vpsde_config.beta_min")
    _check_equal(float(vp.get("beta_max")), BETA_MAX, f"{_ROOT}.sdes.cell.vpsde_config.beta_max")
    _check_equal(float(vp.get("limit_var_scaling_constant")), LIMIT_VAR_SCALE,
                 f"{_ROOT}.sdes.cell.vpsde_config.limit_var_scaling_constant")
    density = float(vp.get("limit_density"))
    pos = sdes["pos"]
    _check_equal(pos.get("_target_"), "mattergen.common.diffusion.corruption.NumAtomsVarianceAdjustedWrappedVESDE",
                 f"{_ROOT}.sdes.pos._target_")
    _check_equal(float(pos.get("sigma_max")), SIGMA_MAX, f"{_ROOT}.sdes.pos.sigma_max")
    _check_equal(float(pos.get("sigma_min", SIGMA_MIN)), SIGMA_MIN, f"{_ROOT}.sdes.pos.sigma_min")
    _check_equal(float(pos.get("wrapping_boundary")), 1.0, f"{_ROOT}.sdes.pos.wrapping_boundary")
    _check_equal(pos.get("limit_info_key"), "num_atoms", f"{_ROOT}.sdes.pos.limit_info_key")
    return CrystalDiffusion(atom_types=MaskDiffusion(), coords=WrappedVESDE(), lattice=LatticeVPSDE(density=density))


def load_mattergen(path_or_name: str | Path, device: str | torch.device = "cpu") -> MatterGenModel:
    """A released MatterGen model by name (``"mattergen_base"``, ``"space_group"``, …, resolved in
    ``$MATTERGEN_KIT_MODELS`` and the kit's cache) or folder (``config.yaml`` + ``checkpoints/last.ckpt``).

    The checkpoint is read safely (weights only, size/sha256 checked for a released name) and its weights
    must map onto the port exactly."""
    location = resolve_model(path_or_name)
    config = yaml.safe_load(location.config.read_text())
    net_config = parse_config(config)
    diffusion = diffusion_from_config(config)
    if not location.checkpoint.is_file():
        raise FileNotFoundError(f"{location.folder} has config.yaml but no {location.checkpoint.relative_to(location.folder)}")
    fingerprint = None if _is_test_fixture(location.folder) else location.fingerprint
    checkpoint = load_lightning_checkpoint(location.checkpoint, fingerprint)
    net = build_denoiser(net_config)
    result = net.load_state_dict(denoiser_state_dict(checkpoint["state_dict"]), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{location.checkpoint} does not match its config.yaml: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    denoiser = MatterGenKitDenoiser(net.to(device).eval())
    meta = {"source": "mattergen", "mattergen_name": location.name, "properties": net.property_names,
            **MATTERGEN_SAMPLER_META}
    # path = the checkpoint file: output folders record its name and sha256 (outputs.run_settings), resume checks it
    return MatterGenModel(denoiser, diffusion, NumAtomsPrior.alex_mp_20(), {**meta, "folder": str(location.folder)},
                          location.checkpoint)


def _is_test_fixture(folder: Path) -> bool:
    """The random-weight models written by tools/make_mattergen_reference.py carry a marker file: they have a
    released name but not the released weights, so no published fingerprint applies."""
    return (folder / "RANDOM_WEIGHTS").is_file()
