"""HHI, space groups and the band-gap predictor."""

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from mattergen_kit.evaluation.properties import band_gap_predictor, hhi, spacegroup


def test_hhi_and_spacegroup():
    from pymatgen.analysis.hhi import HHIModel

    assert hhi("Fe2O3") == pytest.approx(HHIModel().get_hhi("Fe2O3"))
    assert hhi("Fe2O3")[0] < hhi("Nd2Fe14B")[0]  # rare earths: concentrated supply
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert spacegroup(nacl) == (225, "Fm-3m")
    nacl.perturb(0.02)
    assert spacegroup(nacl)[0] == 225  # symprec 0.1 tolerates small noise


def test_band_gap_predictor_beats_baseline():
    pred = band_gap_predictor()
    m = pred.metrics
    assert m["n_train"] > 5000 and m["n_test"] > 500
    assert m["test_mae_eV"] < 0.5 * m["baseline_mae_eV"], m
    gaps = pred.predict(["NaCl", "Cu", "Si", "MgO"])
    assert gaps[1] < 0.3 and gaps[0] > 2.0 and gaps[3] > 2.0
    assert np.all(gaps >= 0)
