"""Absorbing-state D3PM: forward marginals, Bayes posteriors (brute force), loss, reverse step, masking."""
import math

import pytest
import torch
import torch.nn.functional as F

from mattergen_kit.diffusion.atom_types import (
    ALLOWED_Z, MASK_CLASS, NUM_CLASSES, MaskDiffusion, allowed_classes_mask, continuous_to_discrete, mask_logits,
)

K_SMALL, T_SMALL = 5, 10  # 4 "elements" + mask, 10 steps


def transition_matrices(K, T):
    """Explicit one-step matrices Q_s[i, j] = P(x_{s+1} = j | x_s = i), β(s) = 1/(T − s)."""
    m = K - 1
    Qs = []
    for s in range(T):
        beta = 1.0 / (T - s)
        Q = (1 - beta) * torch.eye(K, dtype=torch.float64)
        Q[:, m] += beta
        Qs.append(Q)
    return Qs


def cumulative(Qs, a, b):
    """Q_a Q_{a+1} … Q_{b−1} (identity if a = b): P(x_b | x_a)."""
    out = torch.eye(Qs[0].shape[0], dtype=torch.float64)
    for s in range(a, b):
        out = out @ Qs[s]
    return out


def test_schedule_is_linear_and_matches_matrix_products():
    d = MaskDiffusion(K_SMALL, T_SMALL)
    Qs = transition_matrices(K_SMALL, T_SMALL)
    for k in range(T_SMALL + 1):
        Qbar = cumulative(Qs, 0, k)
        assert math.isclose(float(d.alpha_bar(k)), 1 - k / T_SMALL, abs_tol=1e-12)
        x0 = torch.arange(K_SMALL - 1)
        probs = d.q_probs(F.one_hot(x0, K_SMALL).double(), torch.full((K_SMALL - 1,), k))
        torch.testing.assert_close(probs, Qbar[: K_SMALL - 1], rtol=0, atol=1e-12)


def test_continuous_to_discrete():
    d = MaskDiffusion()
    t = torch.tensor([0.0, 1e-5, 0.5, 1.0])
    assert continuous_to_discrete(t).tolist() == [0, 0, 499, 999]
    assert d.corruption_step(t).tolist() == [1, 1, 500, 1000]
    # the sampler grid linspace(1, 1e-3, 1000) visits every k_loss = 999 − i exactly once
    grid = torch.linspace(1.0, 1e-3, 1000, dtype=torch.float64)
    assert continuous_to_discrete(grid).tolist() == list(range(999, -1, -1))


@pytest.mark.parametrize("soft", [False, True])
def test_posterior_equals_bayes_by_brute_force(soft):
    """q(x_{k'} | x_k, x_0) from the module == explicit matrix Bayes, for every k' < k, x_k, x_0."""
    d = MaskDiffusion(K_SMALL, T_SMALL)
    Qs = transition_matrices(K_SMALL, T_SMALL)
    g = torch.Generator().manual_seed(0)
    m = K_SMALL - 1
    for k in range(1, T_SMALL + 1):
        for kp in range(0, k):
            A = cumulative(Qs, 0, kp)      # P(x_{k'} | x_0)
            Bm = cumulative(Qs, kp, k)     # P(x_k | x_{k'})
            for x_k in range(K_SMALL):
                if soft:   # random x_0 distribution over the elements (never the mask), as the model gives
                    p = torch.rand(K_SMALL - 1, generator=g, dtype=torch.float64)
                    p = torch.cat([p / p.sum(), torch.zeros(1, dtype=torch.float64)])
                    if x_k != m:
                        p[x_k] = max(float(p[x_k]), 0.3)
                        p = p / p.sum()
                    priors = [(c, float(p[c])) for c in range(m)]
                else:
                    priors = None
                for c in range(m):
                    if soft:
                        x0_vec = p
                    else:
                        x0_vec = F.one_hot(torch.tensor(c), K_SMALL).double()
                    # brute force: Σ_c p(c | x_k) q(x_{k'} | x_k, c) with q(x_{k'}|x_k,c) = A[c,j] B[j,x_k] / Abar_k[c,x_k]
                    Ak = A @ Bm
                    if soft:
                        num = torch.zeros(K_SMALL, dtype=torch.float64)
                        wsum = 0.0
                        for cc, pc in priors:
                            if Ak[cc, x_k] > 0:
                                post = A[cc] * Bm[:, x_k] / Ak[cc, x_k]
                                num += pc * post
                                wsum += pc
                        if wsum == 0:
                            break  # impossible observation (x_k unmasked at k = T)
                        expected = num / wsum
                    else:
                        if Ak[c, x_k] == 0:
                            continue  # impossible observation
                        expected = A[c] * Bm[:, x_k] / Ak[c, x_k]
                    got = d.posterior_probs(torch.tensor([x_k]), x0_vec[None], torch.tensor([k]), torch.tensor([kp]))[0]
                    assert torch.allclose(got.sum(), torch.tensor(1.0, dtype=torch.float64), atol=1e-12)
                    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
                    if soft:
                        break  # x0_vec does not depend on c


def test_default_one_step_posterior_is_reference():
    """k_prev defaults to k − 1; masked atom at step k: P(reveal) = 1/k (ref §2.5: 1/(k_loss+1))."""
    d = MaskDiffusion()
    x0 = torch.tensor([10])
    for k in [1, 2, 500, 1000]:
        post = d.posterior_probs(torch.tensor([MASK_CLASS]), F.one_hot(x0, NUM_CLASSES).double(), torch.tensor([k]))
        assert math.isclose(float(post[0, 10]), 1.0 / k, rel_tol=1e-9)
        assert math.isclose(float(post[0, MASK_CLASS]), 1 - 1.0 / k, rel_tol=1e-9, abs_tol=1e-15)


@pytest.mark.parametrize("t", [0.05, 0.3, 0.7, 0.999])
def test_forward_mask_fraction(t):
    d = MaskDiffusion()
    n = 200_000
    g = torch.Generator().manual_seed(1)
    x0 = torch.randint(0, 100, (n,), generator=g)
    k = d.corruption_step(torch.full((n,), t))
    x_k = d.q_sample(x0, k, g)
    p = (math.floor(999 * t) + 1) / 1000
    frac = float((x_k == MASK_CLASS).double().mean())
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(x_k[x_k != MASK_CLASS], x0[x_k != MASK_CLASS])  # unmasked atoms keep their class


def test_loss_perfect_model_and_ce_branch():
    d = MaskDiffusion()
    g = torch.Generator().manual_seed(2)
    n = 64
    x0 = torch.randint(0, 100, (n,), generator=g)
    perfect = torch.full((n, NUM_CLASSES), -1e4).scatter(1, x0[:, None], 0.0)
    for k in [1, 2, 300, 1000]:
        x_k = d.q_sample(x0, torch.full((n,), k), g)
        loss = d.loss_per_atom(x0, x_k, perfect, torch.full((n,), k))
        assert float(loss.abs().max()) < 1e-6
    # k − 1 = 0 branch is −log p_θ(x_0 | x_1) for a masked atom, + 0.01 CE: check with uniform logits
    logits = torch.zeros(1, NUM_CLASSES)
    loss = d.loss_per_atom(torch.tensor([5]), torch.tensor([MASK_CLASS]), logits, torch.tensor([1]))
    # posterior ∝ p_c · (1/T) for c < m and p_m · 1 for m, p = 1/101: P(x_0 = 5) = (1/T) / (100/T + 1)
    expected = -math.log((1 / 1000) / (100 / 1000 + 1)) + 0.01 * math.log(NUM_CLASSES)
    assert math.isclose(float(loss), expected, rel_tol=1e-5)


def test_loss_kl_matches_explicit_kl():
    d = MaskDiffusion(K_SMALL, T_SMALL)
    Qs = transition_matrices(K_SMALL, T_SMALL)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(1, K_SMALL, generator=g, dtype=torch.float64)
    x0, x_k, k = 2, K_SMALL - 1, 6
    A, Bm = cumulative(Qs, 0, k - 1), Qs[k - 1]
    q = A[x0] * Bm[:, x_k]
    q = q / q.sum()
    p = torch.softmax(logits[0], -1) @ A * Bm[:, x_k]
    p = p / p.sum()
    kl = float((q * (torch.log(q + 1e-300) - torch.log(p))).where(q > 0, torch.zeros(()).double()).sum())
    ce = float(F.cross_entropy(logits, torch.tensor([x0])))
    got = float(d.loss_per_atom(torch.tensor([x0]), torch.tensor([x_k]), logits, torch.tensor([k])))
    assert math.isclose(got, kl + 0.01 * ce, rel_tol=1e-6)


def test_reverse_step_reveal_rate_and_frozen_atoms():
    d = MaskDiffusion()
    n = 40_000
    g = torch.Generator().manual_seed(4)
    logits = mask_logits(torch.randn(n, NUM_CLASSES, generator=g))
    x_k = torch.full((n,), MASK_CLASS)
    x_k[: n // 2] = torch.randint(0, 83, (n // 2,), generator=g)  # some already revealed (any class)
    k, kp = 600, 450  # a jump of 150 steps
    sample, mean = d.reverse_step(x_k, logits, torch.tensor(k), torch.tensor(kp), g)
    assert torch.equal(sample[: n // 2], x_k[: n // 2]) and torch.equal(mean[: n // 2], x_k[: n // 2])
    revealed = (sample[n // 2:] != MASK_CLASS).double().mean()
    p = ((1 - kp / 1000) - (1 - k / 1000)) / (k / 1000)  # (ᾱ_k' − ᾱ_k)/(1 − ᾱ_k)
    assert abs(float(revealed) - p) < 4 * math.sqrt(p * (1 - p) / (n // 2))
    # revealed classes are allowed elements only
    allowed = allowed_classes_mask()
    assert bool(allowed[sample[n // 2:][sample[n // 2:] != MASK_CLASS]].all())
    # last step k' = 0: nothing stays masked
    last, _ = d.reverse_step(x_k, logits, torch.tensor(1), torch.tensor(0), g)
    assert not bool((last == MASK_CLASS).any())


def test_element_masking():
    assert len(ALLOWED_Z) == 76 and 2 not in ALLOWED_Z and 83 in ALLOWED_Z and 84 not in ALLOWED_Z
    keep = allowed_classes_mask()
    assert int(keep.sum()) == 76 and not bool(keep[MASK_CLASS])
    logits = torch.zeros(3, NUM_CLASSES)
    extra = allowed_classes_mask([3, 8])  # Li-O
    out = mask_logits(logits, extra)
    probs = torch.softmax(out, -1)
    torch.testing.assert_close(probs[:, [2, 7]].sum(-1), torch.ones(3))
    out_default = mask_logits(logits)
    assert float(out_default[0, MASK_CLASS]) <= -1e9 and float(out_default[0, 1]) <= -1e9  # mask, He
    assert float(out_default[0, 0]) == 0.0


def test_remask_step_keeps_the_forward_marginal_and_redraws_revealed_atoms():
    """ReMDM-style step: revealed atoms are re-masked with probability σ, the masked ones revealed with the rescaled
    probability, so the mask share after the step is still 1 − ᾱ_{k'} = k'/T (what the network was trained on)."""
    d = MaskDiffusion()
    n = 40_000
    g = torch.Generator().manual_seed(5)
    logits = mask_logits(torch.randn(n, NUM_CLASSES, generator=g))
    k, kp, sigma = 500, 450, 0.1
    x_k = d.q_sample(torch.randint(0, 83, (n,), generator=g), torch.tensor(k), g)   # mask share k/T
    sample, _ = d.remask_reverse_step(x_k, logits, torch.tensor(k), torch.tensor(kp), sigma, g)
    mask_share = float((sample == MASK_CLASS).double().mean())
    assert abs(mask_share - kp / 1000) < 4 * math.sqrt(0.25 / n)
    was_revealed = x_k != MASK_CLASS
    remasked = float((sample[was_revealed] == MASK_CLASS).double().mean())
    assert abs(remasked - sigma) < 4 * math.sqrt(sigma * (1 - sigma) / int(was_revealed.sum()))
    kept = was_revealed & (sample != MASK_CLASS)
    assert torch.equal(sample[kept], x_k[kept])                  # a revealed atom is kept or masked, never swapped
    # σ is capped at (1 − ᾱ_k')/ᾱ_k, so the last step (k' = 0) reveals everything; σ = 0 is the reference step
    last, _ = d.remask_reverse_step(x_k, logits, torch.tensor(1), torch.tensor(0), 0.5, g)
    assert not bool((last == MASK_CLASS).any())
    ref = d.reverse_step(x_k, logits, torch.tensor(k), torch.tensor(kp), torch.Generator().manual_seed(9))
    zero = d.remask_reverse_step(x_k, logits, torch.tensor(k), torch.tensor(kp), 0.0, torch.Generator().manual_seed(9))
    assert torch.equal(ref[0], zero[0]) and torch.equal(ref[1], zero[1])
