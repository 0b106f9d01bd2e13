"""The default hull ``mp20+mpfe`` (MP-20 phases + bundled structures + Materials Project formation energies), suspect
energies, novelty against what Materials Project knows, and the second opinion — on real bundled MP data (issue 26).

The two "generated-like" formation energies are those CHGNet gave the demo's PrCdClF3 and BS2 after relaxation
(``mattergen-kit generate --num 32 --seed 0``; issue 26): against the old ``mp20`` hull they sat 1.085 and 0.610
eV/atom *below* the hull, because their competing phases (PrF3: 24 atoms per cell; B2S3: 40) are not in MP-20.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Composition, Lattice, Structure

from mattergen_kit.evaluation import evaluate, stages
from mattergen_kit.evaluation.hull import ConvexHull, ElementalReferences
from mattergen_kit.evaluation.reference import (hull_table, known_compositions, load_mp_formation_energies,
                                                load_phases_table)
from mattergen_kit.evaluation.report import summarise

DEMO_E_FORM = {"PrCdClF3": -3.0089, "BS2": -0.6168}   # eV/atom, CHGNet-relaxed demo crystals (module docstring)


@pytest.fixture(scope="module")
def hulls():
    return ConvexHull("mp20"), ConvexHull()


def test_merged_hull_is_named_and_counted():
    h = hull_table()
    assert h.name == "mp20+mpfe" and h.counts == {"mp20_phases": 35317, "mp_formation_energies": 15104,
                                                  "bundled": 2966}
    assert h.table["material_id"].is_unique                       # one entry per material id
    assert "53,387 phases" in h.description and "MP-20 value preferred" in h.description
    fe = load_mp_formation_energies().set_index("material_id")
    merged = h.table.set_index("material_id")
    shared = merged.index[merged["source"] == "mp20_phases"].intersection(fe.index)
    assert len(shared) > 18000
    phases = load_phases_table().set_index("material_id")          # shared ids keep their MP-20 value
    assert np.allclose(merged.loc[shared, "formation_energy_per_atom"],
                       phases.loc[shared, "formation_energy_per_atom"], atol=1e-6)
    assert merged.loc["mp-2651", "source"] == "mp_formation_energies"   # PrF3: 24-atom cell, not in MP-20


def test_demo_crystals_flip_sign_between_the_hulls(hulls):
    old, new = hulls
    for formula, ef in DEMO_E_FORM.items():
        below_old, above_new = old.e_above_hull(formula, ef), new.e_above_hull(formula, ef)
        assert below_old < -0.1, (formula, below_old)              # "stable", far below the MP-20-only hull
        assert above_new > 0.1, (formula, above_new)               # above the threshold once the big cells count
    comp = Composition("PrCdClF3")
    decomposition = new.phase_diagram([e.symbol for e in comp.elements]).get_decomposition(comp)
    assert "mp-2651" in {entry.name for entry in decomposition}     # PrF3 is what it decomposes into
    assert old.e_above_hull("PrCdClF3", DEMO_E_FORM["PrCdClF3"]) == pytest.approx(-1.085, abs=2e-3)
    assert new.e_above_hull("PrCdClF3", DEMO_E_FORM["PrCdClF3"]) == pytest.approx(0.325, abs=2e-3)


def test_known_ground_states_sit_on_the_merged_hull(hulls):
    _, new = hulls
    phases = load_phases_table()
    ground = phases[phases["e_above_hull"] == 0].sample(300, random_state=0)
    eh = np.array([new.e_above_hull(r.composition, r.formation_energy_per_atom) for r in ground.itertuples()])
    assert eh.min() >= -0.05, ground.iloc[int(eh.argmin())]["material_id"]
    fe = load_mp_formation_energies().set_index("material_id")
    for mid in ("mp-2651", "mp-1199451"):                           # PrF3, B2S3: large cells, MP formation energies
        assert new.e_above_hull(fe.loc[mid, "composition"], fe.loc[mid, "formation_energy_per_atom"]) >= -0.05


def _relaxed_rows(formulas_and_e_form: list[tuple[str, float]]):
    """Rows and structures as the relaxation stage leaves them: CHGNet total energies chosen so that the formation
    energy is the given one (E = N·E_f + Σ n_i μ_i, the inverse of hull.ElementalReferences)."""
    refs = ElementalReferences.load(potential="chgnet")
    rows, final = [], []
    for formula, ef in formulas_and_e_form:
        comp = Composition(formula)
        species = [el.symbol for el, n in comp.items() for _ in range(int(n))]
        s = Structure(Lattice.cubic(3.0 * len(species) ** (1 / 3)), species,
                      np.random.default_rng(0).random((len(species), 3)))
        energy = ef * comp.num_atoms + sum(float(n) * refs.mu[el.symbol] for el, n in comp.items())
        rows.append({"relaxed": True, "energy": energy, "formula": comp.reduced_formula})
        final.append(s)
    return rows, final


def test_suspect_flag_reason_and_opt_in():
    cases = [("PrCdClF3", DEMO_E_FORM["PrCdClF3"]), ("BS2", -1.5), ("NaCl", -3.0)]
    rows, final = _relaxed_rows(cases)
    meta: dict = {}
    stages.stability_stage(rows, final, stages.EvaluationSettings(hull="mp20"), meta)
    pr, bs, nacl = rows
    assert meta["hull"] == "mp20" and pr["suspect"] and not pr["stable"]    # the old hull: 1.085 below -> suspect
    assert "Cd-Cl-F-Pr" in pr["suspect_reason"] and "missing reference phase" in pr["suspect_reason"]
    assert bs["suspect"] and "mp-540668" in bs["suspect_reason"]             # MP's own BS2 is 0.77 eV/atom higher
    assert nacl["suspect"] and "potential failure likely" in nacl["suspect_reason"]

    rows, final = _relaxed_rows(cases)
    stages.stability_stage(rows, final, stages.EvaluationSettings(hull="mp20", count_suspect_as_stable=True), {})
    assert rows[0]["suspect"] and rows[0]["stable"]                          # counted only when asked

    rows, final = _relaxed_rows(cases[:1])
    meta = {}
    stages.stability_stage(rows, final, stages.EvaluationSettings(), meta)    # the default hull
    (pr,) = rows
    assert meta["hull"] == "mp20+mpfe" and meta["hull_sources"]["mp_formation_energies"] == 15104
    assert not pr["suspect"] and not pr["stable"] and pr["e_above_hull"] == pytest.approx(0.325, abs=2e-3)
    assert pr["e_above_hull_mp20"] == pytest.approx(-1.085, abs=2e-3)          # both hulls in the table


def test_known_composition_and_bundled_structure_flags():
    from mattergen_kit.evaluation.reference import bundled

    te = bundled("test")
    i = next(k for k, s in enumerate(te.structures) if len(s) <= 4)
    known = te.structures[i]
    made_up = Structure(Lattice.cubic(5.0), ["Pr", "Cd", "Cl", "F", "F", "F"],
                        [[0, 0, 0], [.5, .5, .5], [.5, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]])
    rows = [{"formula": s.composition.reduced_formula} for s in (known, made_up)]
    settings = stages.EvaluationSettings(reference="bundled-train", progress=False)
    stages.novelty_stage(rows, [known, made_up], [True, True], settings)
    assert rows[0]["novel"] and rows[0]["matches_bundled"]                    # not in train, but a bundled crystal
    assert rows[0]["matched_bundled_id"] == str(te.properties["material_id"].iloc[i])
    assert rows[0]["known_composition"] and rows[0]["known_composition_id"] in set(hull_table().table["material_id"])
    assert rows[1]["novel"] and not rows[1]["matches_bundled"] and not rows[1]["known_composition"]
    assert "PrCdClF3" not in known_compositions() and "PrF3" in known_compositions()

    df = pd.DataFrame([dict(r, structural_valid=True, unique=True, stable=True, stable_0=False, e_above_hull=0.0,
                            sun=False) for r in rows])
    s = summarise(df, 2, relaxed=True, has_reference=True)
    assert s["novelty"] == 1.0 and s["novelty_vs_bundled_structures"] == 0.5 and s["novelty_composition"] == 0.5
    assert s["sun"] == 0.5 and s["sun_new_structure"] == 0.5                 # only the made-up crystal is new


def test_second_opinion_checks_the_sun_crystals(monkeypatch, tmp_path):
    """A small bundled ground state judged as if unknown (so it is a S.U.N. crystal): SevenNet relaxes it again,
    agrees with CHGNet within 0.1 eV/atom, and the summary says how many were checked and at what cost."""
    pytest.importorskip("sevenn", reason="the second opinion needs the optional sevenn package")
    from mattergen_kit.evaluation.reference import bundled

    te = bundled("test")
    p = te.properties.reset_index(drop=True)
    i = sorted((k for k in p.index if p.loc[k, "e_above_hull"] <= 1e-6 and len(te.structures[k]) <= 3
                and len(te.structures[k].composition.elements) == 2),
               key=lambda k: (len(te.structures[k]), p.loc[k, "material_id"]))[0]

    def no_bundled_match(rows, final, valid, ref_name):
        for r in rows:
            r["matches_bundled"], r["matched_bundled_id"] = False, None

    monkeypatch.setattr(stages, "known_compositions", lambda: {})
    monkeypatch.setattr(stages, "_bundled_matches", no_bundled_match)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = evaluate([te.structures[i]], reference="bundled-train", steps=60, out=tmp_path, distribution=False,
                       properties=False, progress=False, second_opinion="sevennet")
    row = rep.per_structure.iloc[0]
    assert row["sun"] and np.isfinite(row["e_above_hull_sevennet"])
    assert not row["second_opinion_disagrees"] and abs(row["e_above_hull_sevennet"] - row["e_above_hull"]) <= 0.1
    so = rep.summary["second_opinion"]
    assert so["n_checked"] == 1 and so["n_disagree"] == 0 and so["seconds_per_candidate"] > 0
    assert (tmp_path / "second_opinion_sevennet.jsonl").is_file()
    assert list(rep.table.columns[:5]) == ["name", "formula", "n_atoms", "e_above_hull", "e_above_hull_mp20"]


def test_second_opinion_needs_relaxation_and_another_potential():
    with pytest.raises(ValueError, match="relax=True"):
        stages.EvaluationSettings(relax=False, second_opinion="sevennet").check()
    with pytest.raises(ValueError, match="the relaxation model itself"):
        stages.EvaluationSettings(model="sevennet", second_opinion="sevennet").check()
    with pytest.raises(ValueError, match="hull must be one of"):
        stages.EvaluationSettings(hull="alex-mp").check()
