"""SevenNet as a second ML potential: its energies go through its own elemental references, never CHGNet's.

The relaxation test needs the optional ``sevenn`` package (``pip install 'mattergen_kit[sevennet]'``) and is
skipped, with the reason in pytest's summary, without it. The reference-file tests need nothing extra.
"""

import json
import warnings

import numpy as np
import pytest

from mattergen_kit.evaluation import evaluate
from mattergen_kit.evaluation.hull import ElementalReferences, references_file


def _small_ground_state():
    """The smallest binary bundled test crystal on MP's hull (a real DFT structure, deterministic pick)."""
    from mattergen_kit.evaluation.reference import bundled

    te = bundled("test")
    p = te.properties.reset_index(drop=True)
    cand = [i for i in p.index if p.loc[i, "e_above_hull"] <= 1e-6 and len(te.structures[i]) <= 3
            and len(te.structures[i].composition.elements) == 2]
    i = sorted(cand, key=lambda i: (len(te.structures[i]), p.loc[i, "material_id"]))[0]
    return te.structures[i], float(p.loc[i, "formation_energy_per_atom"])


def test_sevennet_relaxes_a_bundled_crystal_on_its_own_references():
    try:
        import sevenn  # noqa: F401
    except ImportError:
        pytest.skip("sevenn is not installed (optional extra: pip install 'mattergen_kit[sevennet]')")
    from mattergen_kit.evaluation.relax import RelaxSettings, relax_structures

    s, ef_dft = _small_ground_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (r,) = relax_structures([s], RelaxSettings(model="sevennet", steps=60), progress=False)
    assert r["ok"], r["error"]
    assert np.isfinite(r["energy"]) and r["converged"] and r["rmsd"] < 0.1, r  # a DFT ground state barely moves
    refs = ElementalReferences.load(potential="sevennet")
    assert refs.potential == "sevennet" and "SevenNet" in refs.meta["source"]
    ef = refs.formation_energy_per_atom(s.composition, r["energy"], s)
    assert abs(ef - ef_dft) < 0.15, (s.composition.reduced_formula, ef, ef_dft)
    # the same energy on CHGNet's μ is a different (wrong) number: the references are not interchangeable
    mu_c = ElementalReferences.load(potential="chgnet").mu
    ef_on_chgnet_mu = (r["energy"] - sum(float(n) * mu_c[e.symbol] for e, n in s.composition.items())) / len(s)
    assert abs(ef_on_chgnet_mu - ef) > 1e-3

    rep = evaluate([s], reference=None, relax=True, model="sevennet", steps=60, distribution=False,
                   properties=False, progress=False)
    row = rep.per_structure.iloc[0]
    assert row["e_form_per_atom"] == pytest.approx(ef, abs=1e-3) and abs(row["e_above_hull"]) <= 0.1
    assert rep.summary["relax_model"] == "sevennet" and rep.summary["hull"] == "mp20+mpfe"


def test_sevennet_energies_with_only_chgnet_references_are_an_error(tmp_path, monkeypatch):
    from mattergen_kit.evaluation import hull

    chgnet = ElementalReferences.load(potential="chgnet")
    with pytest.raises(ValueError, match="fitted for 'chgnet'"):
        chgnet.require("sevennet")
    # a CHGNet file offered as SevenNet's references is refused, whatever its name
    fake = tmp_path / "sevennet_elemental_references.json"
    fake.write_text(references_file("chgnet").read_text())
    with pytest.raises(ValueError, match="fitted for 'chgnet', not 'sevennet'"):
        ElementalReferences.load(fake, potential="sevennet")
    # no SevenNet file at all: a clear error naming the fit command, no fallback to CHGNet's
    monkeypatch.setattr(hull, "references_file",
                        lambda potential="chgnet": tmp_path / f"missing_{potential}_elemental_references.json")
    with pytest.raises(FileNotFoundError, match="calibrate --fit --model sevennet"):
        ElementalReferences.load(potential="sevennet")
    try:
        import sevenn  # noqa: F401
    except ImportError:
        return  # evaluate() stops earlier, on the missing package (tests/test_evaluation_cli.py)
    s, _ = _small_ground_state()
    calls = []
    with pytest.raises(FileNotFoundError, match="sevennet"):
        evaluate([s], reference=None, relax=True, model="sevennet", distribution=False, properties=False,
                 progress=False, callback=lambda k, r: calls.append(k))
    assert calls == []  # failed before any relaxation


def test_reference_files_name_their_potential():
    d = json.loads(references_file("chgnet").read_text())
    assert d.get("potential", "chgnet") == "chgnet"
    with pytest.raises(ValueError, match="unknown ML potential"):
        references_file("mace")
