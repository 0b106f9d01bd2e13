r"""Atom-type diffusion: absorbing-state ("mask") D3PM (Austin et al. 2021), MatterGen ref §2.

Classes. An element with atomic number Z is class ``Z − 1`` (0..99); class ``m = 100`` is the absorbing
mask state (``MASK_Z = 101`` in a :class:`~mattergen_kit.data.CrystalBatch`). K = 101 classes.

Forward process (discrete steps s = 0..T−1, T = 1000)::

    β(s)   = 1 / (T − s)                                  one-step masking probability  x_s → x_{s+1}
    Q_s    = (1 − β(s)) I + β(s) 1 e_mᵀ                    (every class jumps to m, m stays m)
    ᾱ_k    = Π_{j<k} (1 − β(j)) = 1 − k / T                "keep" probability after k steps (linear)
    q(x_k | x_0) = ᾱ_k onehot(x_0) + (1 − ᾱ_k) onehot(m)

Continuous time t ∈ [0, 1] (ref §2.2)::

    corruption:  k      = floor(999 t) + 1  ∈ {1..1000}   (each atom masked with probability k / T)
    loss:        k_loss = floor(999 t) = k − 1            (noisy sample treated as x_{k_loss+1})

Posterior (Bayes), with x_0 given as a probability vector p (one-hot for the data, softmax of the
network's x_0-logits for the model)::

    q(x_{k'} | x_k, x_0=p) ∝ q(x_{k'} | x_0=p) · q(x_k | x_{k'})          (k' < k)
    q(x_{k'} | x_0=p)      = [ᾱ_{k'} p_{0..99},  1 − ᾱ_{k'} Σ_{c<m} p_c]   (mask absorbs the rest)
    q(x_k | x_{k'})        = x_k = c ≠ m :  candidate c → ᾱ_k/ᾱ_{k'},  other candidates → 0
                             x_k = m     :  candidate c ≠ m → 1 − ᾱ_k/ᾱ_{k'},  candidate m → 1

For k' = k − 1 the ratio is ᾱ_k/ᾱ_{k−1} = 1 − β(k−1): this is exactly MatterGen's one-step posterior
(implemented there as ``log(q(x_{k-1}|x_0) + 1e-20) + log(q(x_k|x_{k-1}) + 1e-20)``, as here).

Model posterior (x0-parametrisation): p_θ(x_{k−1} | x_k) = q(x_{k−1} | x_k, x_0 = softmax(logits)).

Loss per atom (hybrid, log space, ref §2.4), k = k_loss + 1::

    base  = KL( q(x_{k−1} | x_k, x_0) ‖ p_θ(x_{k−1} | x_k) )   if k_loss > 0
          = −log p_θ(x_0 | x_1)  (CE of the model posterior)   if k_loss = 0
    loss  = base + λ · CE(logits, x_0),  λ = 0.01
summed over the atoms of a crystal (the caller averages over crystals).

Reverse step (ref §2.5): x_{k'} ~ Cat(p_θ(x_{k'} | x_k)); "mean" = argmax. An already revealed atom never
changes; a masked atom is revealed with probability (ᾱ_{k'} − ᾱ_k)/(1 − ᾱ_k) as a class drawn ∝ p.

Sampling with fewer steps than T (our choice, documented deviation): the sampler hands this module the
pair (k, k') = (floor(999 t_i) + 1, floor(999 t_{i+1}) + 1) — k' = 0 at the last step — and uses the
*jump* posterior q(x_{k'} | x_k, x_0) above, which is the exact Bayes posterior of the same
T = 1000 forward process.  With 1000 steps and t = linspace(1, 1e-3, 1000), k' = k − 1 at every step,
i.e. precisely the reference one-step D3PM sampler; with fewer steps the network is still queried at
the continuous times it was trained on (the mask fraction at t is unchanged), rather than re-defining
T = num_steps.

Revealed atoms are kept explicitly in :meth:`MaskDiffusion.reverse_step` (x_{k'} := x_k when x_k ≠ m). This is
what the posterior says exactly; the reference's ``+1e−20`` formula agrees except in a corner it gets
wrong — an atom revealed as a class whose current x_0-probability is exactly 0 (e.g. masked by a
different element mask) would be re-drawn there.

Remasking (an option, not MatterGen: ReMDM, Wang et al. 2025, "Remasking discrete diffusion models with
inference-time scaling"). The reference never changes a revealed atom, so the first reveals — drawn when almost
nothing of the cell is known — stay for good. With a remasking probability σ ∈ [0, σ_max] a step instead uses::

    revealed atom:  x_{k'} = x_k with probability 1 − σ,  mask with probability σ
    masked atom:    revealed with probability (ᾱ_{k'} − (1 − σ) ᾱ_k) / (1 − ᾱ_k), as a class drawn ∝ p
    σ_max = min(1, (1 − ᾱ_{k'}) / ᾱ_k)        (keeps the reveal probability ≤ 1)

so the share of revealed atoms after the step is still ᾱ_{k'} (the forward marginals, on which the network was
trained, are unchanged), while an early, incoherent reveal can be re-drawn later from a better-informed p.
σ = 0 is exactly the reference step.

Inference-time logit masking (ref §6.6, §12.4): every class outside MatterGen's 76 allowed elements
(Z 1..83 minus He, Ne, Ar, Kr, Tc, Xe, Pm) and the mask class get logit −1e10; an optional extra mask
(e.g. the elements of a chemical system) can restrict further. Logits are not masked in training.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from mattergen_kit.constants import ALLOWED_Z, EXCLUDED_Z, MASK_CLASS, NUM_CLASSES  # noqa: F401  (re-exported)

NUM_STEPS = 1000
HYBRID_LAMBDA = 0.01
LOG_EPS = 1e-20  # the reference's epsilon inside log(·)
MASK_LOGIT = -1e10
# ALLOWED_Z: MatterGen's SELECTED_ATOMIC_NUMBERS, Z = 1..83 without He, Ne, Ar, Kr, Tc, Xe, Pm (76 elements).


def continuous_to_discrete(t: torch.Tensor, num_steps: int = NUM_STEPS) -> torch.Tensor:
    """k_loss = floor((T − 1) t) ∈ {0..T−1} (ref §2.2, ``to_discrete_time``)."""
    return torch.floor(t * (num_steps - 1)).long()


def allowed_classes_mask(allowed_z: Iterable[int] = ALLOWED_Z, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(K,) bool: True for the classes (Z − 1) of ``allowed_z``; the mask class is never allowed."""
    mask = torch.zeros(num_classes, dtype=torch.bool)
    for z in allowed_z:
        z = int(z)
        if not 1 <= z <= num_classes - 1:
            raise ValueError(f"atomic number {z} is outside 1..{num_classes - 1}")
        mask[z - 1] = True
    return mask


_DEFAULT_ALLOWED: dict = {}


def _default_allowed(num_classes: int, device) -> torch.Tensor:
    key = (num_classes, str(device))
    if key not in _DEFAULT_ALLOWED:
        _DEFAULT_ALLOWED[key] = allowed_classes_mask(num_classes=num_classes).to(device)
    return _DEFAULT_ALLOWED[key]


def mask_logits(logits: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """logits + (−1e10) on disallowed classes (ref §6.6).

    The default allowed set is MatterGen's 76 elements (mask class excluded). ``allowed`` (a bool
    tensor broadcastable to ``logits``: (K,) or (ΣN, K)) restricts it further (intersection).
    """
    keep = _default_allowed(logits.shape[-1], logits.device)
    if allowed is not None:
        keep = keep & allowed.to(device=logits.device, dtype=torch.bool)
    return logits.masked_fill(~keep, MASK_LOGIT)


class MaskDiffusion:
    """Absorbing-state D3PM with a linear masking schedule ᾱ_k = 1 − k/T (equations in the module doc).

    All methods work on class indices (0..K−1, mask = K−1), not on atomic numbers.
    ``num_classes`` and ``num_steps`` are arguments only so that tests can use a small vocabulary.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, num_steps: int = NUM_STEPS, hybrid_lambda: float = HYBRID_LAMBDA):
        self.num_classes = num_classes
        self.mask_class = num_classes - 1
        self.num_steps = num_steps
        self.hybrid_lambda = hybrid_lambda

    # ------------------------------------------------------------------ schedule
    def alpha_bar(self, k: torch.Tensor) -> torch.Tensor:
        """ᾱ_k = 1 − k/T (float64)."""
        return 1.0 - torch.as_tensor(k, dtype=torch.float64) / self.num_steps

    def beta(self, s: torch.Tensor) -> torch.Tensor:
        """β(s) = 1/(T − s): probability of the jump x_s → x_{s+1} to the mask."""
        return 1.0 / (self.num_steps - torch.as_tensor(s, dtype=torch.float64))

    def corruption_step(self, t: torch.Tensor) -> torch.Tensor:
        """k = floor(999 t) + 1 ∈ {1..T}: the discrete step of a sample corrupted at continuous t."""
        return continuous_to_discrete(t, self.num_steps) + 1

    # ------------------------------------------------------------------ forward
    def q_probs(self, x0_probs: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q(x_k | x_0 = p) = [ᾱ_k p_{<m}, 1 − ᾱ_k Σ_{c<m} p_c]   (p: (n, K), k: (n,)) → (n, K)."""
        ab = self.alpha_bar(k).to(x0_probs.dtype)[:, None]
        keep = ab * x0_probs[:, : self.mask_class]                          # ᾱ_k p_c, c ≠ m
        masked = (1.0 - keep.sum(-1, keepdim=True)).clamp_min(0.0)          # everything else is mask (≥ 0 despite rounding)
        return torch.cat([keep, masked], dim=-1)

    def q_sample(self, x0: torch.Tensor, k: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_k ~ q(x_k | x_0): each atom replaced by the mask with probability 1 − ᾱ_k = k/T."""
        u = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=torch.float64)
        masked = u < (1.0 - self.alpha_bar(k).to(x0.device))                # P(mask) = k/T
        return torch.where(masked, torch.full_like(x0, self.mask_class), x0)

    # ------------------------------------------------------------------ posterior
    def posterior_logits(self, x_k: torch.Tensor, x0_probs: torch.Tensor, k: torch.Tensor,
                         k_prev: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised log q(x_{k'} | x_k, x_0 = p), k' = ``k_prev`` (default k − 1).

        log( q(x_{k'} | x_0=p) + 1e−20 ) + log( q(x_k | x_{k'}) + 1e−20 )   (module doc; ref §2.3)
        x_k: (n,) classes, x0_probs: (n, K) probabilities, k, k_prev: (n,) or scalars with k' < k.
        """
        n = x_k.shape[0]
        k = torch.as_tensor(k, device=x_k.device).expand(n)
        k_prev = k - 1 if k_prev is None else torch.as_tensor(k_prev, device=x_k.device).expand(n)
        probs = x0_probs.double()
        fact1 = self.q_probs(probs, k_prev)                                  # q(x_{k'} | x_0 = p)
        ab_k, ab_prev = self.alpha_bar(k).to(x_k.device), self.alpha_bar(k_prev).to(x_k.device)
        ratio = torch.where(ab_prev > 0, ab_k / ab_prev.clamp_min(1e-300), torch.ones_like(ab_k))  # ᾱ_k/ᾱ_{k'}
        is_mask = (x_k == self.mask_class)[:, None]
        onehot = F.one_hot(x_k, self.num_classes).double()
        fact2_unmasked = onehot * ratio[:, None]                             # x_k = c: only candidate c
        fact2_masked = torch.cat([                                           # x_k = m: c → 1 − ratio, m → 1
            (1.0 - ratio)[:, None].expand(n, self.num_classes - 1),
            torch.ones(n, 1, dtype=torch.float64, device=x_k.device)], dim=-1)
        fact2 = torch.where(is_mask, fact2_masked, fact2_unmasked)          # q(x_k | x_{k'})
        return torch.log(fact1 + LOG_EPS) + torch.log(fact2 + LOG_EPS)

    def posterior_probs(self, x_k, x0_probs, k, k_prev=None) -> torch.Tensor:
        """Normalised q(x_{k'} | x_k, x_0 = p)."""
        return torch.softmax(self.posterior_logits(x_k, x0_probs, k, k_prev), dim=-1)

    def model_posterior_logits(self, x_k, x0_logits, k, k_prev=None) -> torch.Tensor:
        """log p_θ(x_{k'} | x_k) (unnormalised) = posterior with x_0 = softmax(logits)."""
        return self.posterior_logits(x_k, torch.softmax(x0_logits.double(), dim=-1), k, k_prev)

    # ------------------------------------------------------------------ loss
    def loss_per_atom(self, x0: torch.Tensor, x_k: torch.Tensor, x0_logits: torch.Tensor,
                      k: torch.Tensor) -> torch.Tensor:
        """Hybrid loss of every atom (ref §2.4): KL (or CE when k − 1 = 0) + λ CE(logits, x_0).

        x0, x_k: (n,) classes; x0_logits: (n, K) raw network logits; k: (n,) step of x_k (k ≥ 1).
        """
        k = torch.as_tensor(k, device=x_k.device).expand(x_k.shape[0])
        onehot = F.one_hot(x0, self.num_classes).double()
        q_log = torch.log_softmax(self.posterior_logits(x_k, onehot, k), dim=-1)           # true posterior
        p_log = torch.log_softmax(self.model_posterior_logits(x_k, x0_logits, k), dim=-1)  # model posterior
        kl = (q_log.exp() * (q_log - p_log)).sum(-1)                          # KL(q ‖ p)
        ce_post = -p_log.gather(-1, x0[:, None]).squeeze(-1)                  # −log p_θ(x_0 | x_1)
        base = torch.where(k - 1 == 0, ce_post, kl)
        ce_x0 = F.cross_entropy(x0_logits.double(), x0, reduction="none")     # λ · CE on the x_0 logits
        return (base + self.hybrid_lambda * ce_x0).to(x0_logits.dtype)

    # ------------------------------------------------------------------ reverse
    def reverse_step(self, x_k: torch.Tensor, x0_logits: torch.Tensor, k: torch.Tensor, k_prev: torch.Tensor,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One ancestral step x_k → x_{k'} (ref §2.5). Returns (sample, mean = argmax of the posterior).

        ``x0_logits`` should already be guided and masked (disallowed elements and the mask class).
        """
        n = x_k.shape[0]
        k = torch.as_tensor(k, device=x_k.device).expand(n)
        k_prev = torch.as_tensor(k_prev, device=x_k.device).expand(n)
        sample, mean = x_k.clone(), x_k.clone()             # revealed atoms: q(x_k | x_k') forces x_k' = x_k
        todo = (x_k == self.mask_class).nonzero().squeeze(-1)  # only masked atoms can change
        if todo.numel():
            logits = self.model_posterior_logits(x_k[todo], x0_logits[todo], k[todo], k_prev[todo])
            probs = torch.softmax(logits, dim=-1)
            sample[todo] = torch.multinomial(probs.float(), 1, generator=generator).squeeze(-1)
            mean[todo] = logits.argmax(-1)
        return sample, mean

    def remask_reverse_step(self, x_k: torch.Tensor, x0_logits: torch.Tensor, k: torch.Tensor, k_prev: torch.Tensor,
                            sigma: float, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step x_k → x_{k'} with remasking probability ``sigma`` (module doc, "Remasking"); σ is clipped to
        σ_max = (1 − ᾱ_{k'})/ᾱ_k. Returns (sample, mean); the mean of a masked atom is the posterior argmax as in
        :meth:`reverse_step`, of a revealed atom its class. ``sigma = 0`` gives :meth:`reverse_step`'s samples.

        k, k_prev: scalars (one step for every atom). ``x0_logits`` already guided and masked.
        """
        ab_k, ab_prev = float(self.alpha_bar(k)), float(self.alpha_bar(k_prev))
        sigma = min(max(float(sigma), 0.0), 1.0, (1.0 - ab_prev) / ab_k if ab_k > 0 else 1.0)
        if sigma == 0.0:
            return self.reverse_step(x_k, x0_logits, k, k_prev, generator)
        sample, mean = x_k.clone(), x_k.clone()
        is_mask = x_k == self.mask_class
        u = torch.rand(x_k.shape, generator=generator, device=x_k.device, dtype=torch.float64)
        reveal_p = (ab_prev - (1.0 - sigma) * ab_k) / (1.0 - ab_k) if ab_k < 1 else 1.0
        remask = ~is_mask & (u < sigma)                                 # revealed → mask with probability σ
        reveal = is_mask & (u < reveal_p)                               # mask → class ∝ p with the rescaled probability
        sample[remask] = self.mask_class
        mean[remask] = self.mask_class
        todo = reveal.nonzero().squeeze(-1)
        if todo.numel():
            probs = torch.softmax(x0_logits[todo].double(), dim=-1)
            sample[todo] = torch.multinomial(probs.float(), 1, generator=generator).squeeze(-1)
            mean[todo] = probs.argmax(-1)
        return sample, mean
