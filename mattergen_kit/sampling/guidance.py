"""Classifier-free guidance combination (MatterGen ref §9).

For every diffused field the unconditional (u) and conditional (c) network outputs are combined as::

    out = u + γ (c − u) = (1 − γ) u + γ c

on the coordinate scores, the lattice scores and the raw type logits (so the guided x_0 distribution is
∝ p(x_0|x_t)^{1−γ} p(x_0|x_t, y)^γ). Because σ_t and std_t are shared by both branches, combining the
network outputs (σ·score) is the same as combining the scores. γ = 0 / γ = 1 need only one network
call (the sampler skips the other branch entirely).
"""

from __future__ import annotations

from mattergen_kit.diffusion.joint import DenoiserOutput


def combine_guidance(uncond: DenoiserOutput, cond: DenoiserOutput, scale: float) -> DenoiserOutput:
    """u + γ (c − u) for every field of a :class:`DenoiserOutput`."""
    def lerp(u, c):
        return u + scale * (c - u)

    return DenoiserOutput(type_logits=lerp(uncond.type_logits, cond.type_logits),
                          coord_score=lerp(uncond.coord_score, cond.coord_score),
                          lattice_score=lerp(uncond.lattice_score, cond.lattice_score))
