"""Stability on known materials: relaxed bundled ground states sit near the hull; strained or atom-swapped
versions land above it. Also the hull machinery itself (leave-one-out, elemental references)."""

import warnings

import numpy as np
import pytest

from mattergen_kit.evaluation import evaluate


@pytest.fixture(scope="module")
def picks():
    """A few small bundled test crystals on MP's hull (deterministic pick), and one small ternary oxide."""
    from mattergen_kit.evaluation.reference import bundled

    te = bundled("test")
    p = te.properties.reset_index(drop=True)
    n = np.array([len(s) for s in te.structures])
    nel = np.array([len(s.composition.elements) for s in te.structures])
    cand = p.index[(p["e_above_hull"] <= 1e-6) & (n <= 4) & (nel >= 2)].tolist()
    cand = sorted(cand, key=lambda i: p.loc[i, "material_id"])[:3]
    oxide = [i for i in p.index if n[i] <= 6 and nel[i] == 3 and "O" in [e.symbol for e in te.structures[i].composition.elements]]
    return [te.structures[i] for i in cand], te.structures[sorted(oxide, key=lambda i: p.loc[i, "material_id"])[0]]


def _eval(structs, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate(structs, reference=None, relax=True, distribution=False, properties=False, progress=False, **kw)


def test_ground_states_near_hull_and_distorted_above(picks):
    ground, oxide = picks
    rep = _eval(ground, steps=150)
    eh = rep.per_structure["e_above_hull"].to_numpy(float)
    assert np.all(np.isfinite(eh)), rep.per_structure
    assert np.all(np.abs(eh) <= 0.1), eh  # known ground states: within 0.1 eV/atom of the DFT hull
    assert rep.summary["stability"] == 1.0

    strained = []
    for s in ground:
        t = s.copy()
        t.scale_lattice(s.volume * 1.15)
        strained.append(t)
    rep_s = _eval(strained, steps=0)  # single point: the +15 % volume strain is kept
    eh_s = rep_s.per_structure["e_above_hull"].to_numpy(float)
    assert np.all(eh_s > eh + 0.02), (eh, eh_s)

    swapped = oxide.copy()
    o_idx = next(i for i, site in enumerate(oxide) if site.specie.symbol == "O")
    c_idx = next(i for i, site in enumerate(oxide) if site.specie.symbol != "O")
    a, b = oxide[c_idx].specie, oxide[o_idx].specie
    swapped.replace(c_idx, b)
    swapped.replace(o_idx, a)
    rep_w = _eval([oxide, swapped], steps=60)
    eh_o, eh_w = rep_w.per_structure["e_above_hull"].to_numpy(float)
    assert eh_o <= 0.1 and eh_w > 0.1 and eh_w > eh_o + 0.1, (eh_o, eh_w)
    assert rep_w.per_structure["stable"].tolist() == [True, False]


def test_hull_reference_and_elemental_references():
    from mattergen_kit.evaluation.hull import ConvexHull, ElementalReferences

    hull = ConvexHull()
    # an element at E_f = 0 is on the hull; a compound far above every reference is above it
    assert hull.e_above_hull("Fe", 0.0) == pytest.approx(0.0, abs=1e-9)
    assert hull.e_above_hull("NaCl", 0.5) > 0.5
    refs = ElementalReferences.load()
    assert {"O", "Fe", "Na", "Cl", "Si"} <= set(refs.mu)
    assert refs.meta["n_fit"] >= 1000 and refs.meta["fit_mae_eV_per_atom"] < 0.05
    # E_f of an element at its reference energy is 0 by construction
    assert refs.formation_energy_per_atom("Fe2", 2 * refs.mu["Fe"]) == pytest.approx(0.0, abs=1e-9)
    assert np.isnan(refs.formation_energy_per_atom("Og", -1.0))  # no reference: NaN, not a crash


def test_mp_hull_without_key_errors_clearly(monkeypatch):
    from mattergen_kit.evaluation.hull import MaterialsProjectHull

    for k in ("MP_API_KEY", "PMG_MAPI_KEY"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(RuntimeError, match="API key"):
        MaterialsProjectHull()
