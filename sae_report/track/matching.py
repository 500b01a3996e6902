"""Feature matching between two SAEs by decoder direction.

- By index: recurrent initialisation keeps feature identities, so feature i of SAE k is feature i
  of SAE k+1; the match quality is the cosine of the two decoder rows.
- By optimal assignment: for SAEs trained independently (a fresh control), the one-to-one pairing
  that maximises the summed decoder cosine (``scipy.optimize.linear_sum_assignment``).

Either way the headline is the fraction of features whose matched cosine is at least a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

DEFAULT_THRESHOLD = 0.9


@dataclass(frozen=True)
class Matching:
    """How the features of SAE ``a`` map to those of SAE ``b``."""

    method: Literal["index", "assignment"]
    """``index`` (same feature number) or ``assignment`` (optimal one-to-one on decoder cosine)."""
    partner: np.ndarray
    """``partner[i]`` = the feature of ``b`` matched to feature i of ``a`` (int, ``[d_sae_a]``;
    -1 when ``b`` is smaller and i got no partner)."""
    cosine: np.ndarray
    """Decoder cosine of each matched pair (``[d_sae_a]``; 0 for features without a partner)."""
    threshold: float
    """Cosine at or above which a pair counts as the same feature."""

    @property
    def matched_fraction(self) -> float:
        """Fraction of ``a``'s features matched with cosine >= threshold."""
        return float(np.mean(self.cosine >= self.threshold)) if self.cosine.size else 0.0

    @property
    def median_cosine(self) -> float:
        """Median matched cosine."""
        return float(np.median(self.cosine)) if self.cosine.size else 0.0


def unit_rows(w: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm; a zero row stays zero."""
    w = np.asarray(w, dtype=np.float64)
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return w / np.where(norms > 0, norms, 1.0)


def cosine_matrix(dec_a: np.ndarray, dec_b: np.ndarray) -> np.ndarray:
    """``[d_sae_a, d_sae_b]`` cosines between decoder rows (``[d_sae, d_in]`` each)."""
    if dec_a.shape[1] != dec_b.shape[1]:
        raise ValueError(f"decoders have different d_in ({dec_a.shape[1]} and {dec_b.shape[1]})")
    return unit_rows(dec_a) @ unit_rows(dec_b).T


def match_by_index(dec_a: np.ndarray, dec_b: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Matching:
    """Pair feature i with feature i (both SAEs must have the same ``d_sae``)."""
    if dec_a.shape != dec_b.shape:
        raise ValueError(f"index matching needs equal shapes, got {list(dec_a.shape)} and {list(dec_b.shape)}")
    cos = np.sum(unit_rows(dec_a) * unit_rows(dec_b), axis=1)
    return Matching("index", np.arange(dec_a.shape[0]), cos, float(threshold))


def match_by_assignment(dec_a: np.ndarray, dec_b: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> Matching:
    """Optimal one-to-one pairing maximising the summed decoder cosine."""
    from scipy.optimize import linear_sum_assignment

    sim = cosine_matrix(dec_a, dec_b)
    rows, cols = linear_sum_assignment(sim, maximize=True)
    partner = np.full(dec_a.shape[0], -1, dtype=np.int64)
    cos = np.zeros(dec_a.shape[0])
    partner[rows] = cols
    cos[rows] = sim[rows, cols]
    return Matching("assignment", partner, cos, float(threshold))


def max_cosine(dec_a: np.ndarray, dec_b: np.ndarray) -> np.ndarray:
    """For each feature of ``a``, its best cosine to any feature of ``b`` (not one-to-one)."""
    return cosine_matrix(dec_a, dec_b).max(axis=1)
