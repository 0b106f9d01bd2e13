"""Sampling: predictor–corrector sampler (incl. CSP mode), number-of-atoms prior, guidance combination."""
from mattergen_kit.sampling.guidance import combine_guidance
from mattergen_kit.sampling.pc_sampler import NonFiniteSampleError, PredictorCorrectorSampler
from mattergen_kit.sampling.prior import ALEX_MP_20, NumAtomsPrior

__all__ = ["ALEX_MP_20", "NonFiniteSampleError", "NumAtomsPrior", "PredictorCorrectorSampler", "combine_guidance"]
