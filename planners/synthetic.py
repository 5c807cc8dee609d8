"""Synthetic inputs for tests and benchmarks (no routing traces ship publicly; planners.md section 7).

- Expert loads: Zipf over expert ranks, ``p_k ~ k^-alpha`` with the ranks randomly
  permuted per layer; ``alpha`` 0 (balanced), 1.01 (estimated for DeepSeek-V3/R1)
  and 1.2 (Qwen3-235B) per NVIDIA aiconfigurator's POWER_LAW_DISTRIBUTION.md.
  Each token picks ``top_k`` distinct experts, so an expert's inclusion
  probability is ``min(1, c p_k)`` with ``c`` chosen so they sum to ``top_k``.
- Inter-layer routing counts: a sticky Markov chain ``p(e' | e) = lam pop' + (1 - lam) T[e]``
  with Dirichlet(0.3) rows ``T`` (the generator used in planners.md section 1.6).
- Sequence lengths: log-normal(mu 5.95, sigma 1.26), FlexSP's fit of its
  Wikipedia sample (planners.md section 3.5), clipped to ``[min_len, max_len]``.
"""

from __future__ import annotations

import numpy as np


def inclusion_probabilities(p: np.ndarray, top_k: int) -> np.ndarray:
    """``min(1, c p)`` summing to ``top_k`` (water-filling)."""
    p = np.asarray(p, dtype=float) / np.sum(p)
    pi = np.zeros_like(p)
    free = np.ones(len(p), dtype=bool)
    k = float(top_k)
    for _ in range(len(p)):
        c = k / p[free].sum()
        cand = c * p
        over = free & (cand >= 1.0)
        if not over.any():
            pi[free] = cand[free]
            break
        pi[over] = 1.0
        free &= ~over
        k -= over.sum()
    return pi


def zipf_loads(
    experts: int, layers: int, alpha: float, tokens: int = 200_000, top_k: int = 8, seed: int = 0
) -> np.ndarray:
    """``[layers, experts]`` routed-token counts."""
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, experts + 1, dtype=float) ** -alpha
    out = np.empty((layers, experts))
    for l in range(layers):
        pi = inclusion_probabilities(ranks[rng.permutation(experts)], min(top_k, experts))
        out[l] = rng.binomial(tokens, pi)
    return out


def markov_affinity(
    loads: np.ndarray, lam: float = 0.5, concentration: float = 0.3, seed: int = 0
) -> np.ndarray:
    """``[layers - 1, E, E]`` counts ``R[l][e1][e2] = load_l[e1] * p(e2 | e1)``."""
    rng = np.random.default_rng(seed)
    layers, e = loads.shape
    out = np.empty((layers - 1, e, e))
    for l in range(layers - 1):
        pop = loads[l + 1] / max(loads[l + 1].sum(), 1e-300)
        t = rng.dirichlet(np.full(e, concentration), size=e)
        out[l] = loads[l][:, None] * (lam * pop[None, :] + (1 - lam) * t)
    return out


def lognormal_lengths(
    n: int, mu: float = 5.95, sigma: float = 1.26, min_len: int = 16, max_len: int = 131_072, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(mu, sigma, n)), min_len, max_len).astype(np.int64)
