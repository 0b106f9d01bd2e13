"""The learning-rate schedule and the EMA update shared by the Lightning module and the pure-torch GPU recipe
(no Lightning here, so training/fast.py can import it on a machine without it).

    lr(step) = lr · f,  f = (step + 1)/W for step < W, then  r + (1 − r) · ½(1 + cos(π · min(1, progress)))
    θ_EMA ← decay θ_EMA + (1 − decay) θ,  decay = min(ema_decay, (1 + step)/(10 + step))
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(step: int, warmup_steps: int, progress: float | None, min_lr_ratio: float) -> float:
    """The factor f above; ``progress`` is the fraction of the budget used (None: no budget, f = 1 after warm-up)."""
    warm = max(warmup_steps, 1)
    if step < warm:
        return (step + 1) / warm
    if progress is None:
        return 1.0
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, ema_decay: float) -> None:
    """θ_EMA ← decay θ_EMA + (1 − decay) θ with the warm-up above (early averages forget fast); buffers copied."""
    decay = min(ema_decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
