"""Evaluation of generated crystals (issue 6; ref §11, design §6).

Public API::

    from mattergen_kit.evaluation import evaluate, evaluate_cli, Report
    report = evaluate(structures_or_folder, reference="bundled-train", relax=True, out="eval_out")
    report.summary        # n, structural_validity, compositional_validity, uniqueness, novelty, stability, sun, rmsd, ...
    report.per_structure  # one row per submitted structure
    report.plot()
    report.table          # the verdicts per crystal: E_hull (default and old hull), suspect, novelties, S.U.N.
    report.suspects()     # more than 0.1 eV/atom below the hull: listed apart, not counted as stable

``evaluate`` itself (:mod:`.evaluate`) runs the stages of :mod:`.stages` on what :mod:`.inputs` read and hands the rows
to :mod:`.report`. Building blocks: :mod:`.validity` (structural / SMACT / bond sanity), :mod:`.matching` (uniqueness,
novelty), :mod:`.relax` (CHGNet relaxation, RMSD, resumable results), :mod:`.relax_batched` (many structures per CHGNet
call), :mod:`.potentials` (what both share), :mod:`.cluster` (relaxations on a Dask cluster), :mod:`.reference` (the
named hulls ``mp20+mpfe`` / ``mp20``, known compositions), :mod:`.hull` (formation energies and E_hull),
:mod:`.distribution` (coverage, Wasserstein), :mod:`.properties` (HHI, space group, band-gap predictor),
:mod:`.calibrate` (CHGNet-vs-DFT calibration).
"""

from mattergen_kit.evaluation.evaluate import Report, evaluate, evaluate_cli, load_structures
from mattergen_kit.evaluation.matching import ReferenceIndex, novel_mask, unique_mask
from mattergen_kit.evaluation.validity import bond_sanity, check_structure, smact_validity, structural_validity

__all__ = ["evaluate", "evaluate_cli", "Report", "load_structures", "structural_validity", "smact_validity",
           "bond_sanity", "check_structure", "unique_mask", "novel_mask", "ReferenceIndex"]
