"""Which SAE architecture a run trained, and what follows for the analysis and the advice.

Read from the run's config, whichever tool wrote it (``sae_report.runlog.architecture``: ours,
SAELens, sparsify, dictionary_learning).

What follows (``Architecture``):

- the L1 architectures (standard, april2024, gated, and a config that names none): the sparsity
  coefficient is ``l1_alpha``; raising it lowers L0;
- ``jumprelu``: the sparsity coefficient is ``l0_coefficient`` (an L0 penalty); raising it lowers
  L0, and the fit across runs works on it as on ``l1_alpha``;
- ``topk`` / ``batchtopk``: L0 is set by ``k``. There is no sparsity coefficient to advise on, no
  L0 target to meet and no collapse of L0; what matters is dead latents (and whether AuxK revives
  them), reconstruction, and ``k`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..runlog.architecture import architecture_of, normalise


@dataclass(frozen=True)
class Architecture:
    """An SAE architecture as the analysis and the advice need to know it."""

    name: str
    """``standard``, ``april2024``, ``gated``, ``topk``, ``batchtopk``, ``jumprelu``, or ``unknown``
    (a config that names none: analysed as an L1 SAE)."""
    coefficient: str | None
    """The config key of the sparsity coefficient that sets L0 (``l1_alpha``, ``l0_coefficient``),
    None when ``k`` sets it."""

    @property
    def fixed_l0(self) -> bool:
        """L0 is set by ``k`` (TopK, BatchTopK): no L0 target, no coefficient, no collapse of L0."""
        return self.coefficient is None

    @property
    def label(self) -> str:
        """How a report names it (``TopK``, ``JumpReLU``, ``standard (ReLU + L1)`` ...)."""
        return LABELS.get(self.name, self.name)

    def raise_l0(self) -> str:
        """The direction chain for raising L0 (``lower l1_alpha -> weaker sparsity penalty -> ...``)."""
        if self.coefficient is None:
            return "raise k -> more active latents per token -> higher L0 (L0 = k)"
        return f"lower {self.coefficient} -> weaker sparsity penalty -> more active features -> higher L0"

    def lower_l0(self) -> str:
        """The direction chain for lowering L0."""
        if self.coefficient is None:
            return "lower k -> fewer active latents per token -> lower L0 (L0 = k)"
        return f"raise {self.coefficient} -> stronger sparsity penalty -> fewer active features -> lower L0"


LABELS = {"standard": "standard (ReLU + L1)", "april2024": "April 2024 (ReLU + L1 x decoder norm)",
          "gated": "Gated (L1)", "topk": "TopK", "batchtopk": "BatchTopK", "jumprelu": "JumpReLU (L0 penalty)",
          "unknown": "not stated (read as ReLU + L1)"}
#: Each architecture's sparsity coefficient (None: L0 = k).
COEFFICIENT = {"standard": "l1_alpha", "april2024": "l1_alpha", "gated": "l1_alpha", "unknown": "l1_alpha",
               "jumprelu": "l0_coefficient", "topk": None, "batchtopk": None}


def architecture(config: Mapping[str, Any] | None) -> Architecture:
    """The ``Architecture`` of a canonical config (its ``architecture`` key, filled by
    ``canonical_config``), else of the raw config; ``unknown`` (an L1 SAE) when none is stated."""
    name = None
    if config:
        name = normalise(config.get("architecture")) or architecture_of(config)
    name = name or "unknown"
    return Architecture(name=name, coefficient=COEFFICIENT.get(name, "l1_alpha"))


def coefficient_of(config: Mapping[str, Any] | None) -> str | None:
    """The sparsity coefficient key of ``config``'s architecture (None: L0 is set by k)."""
    return architecture(config).coefficient


__all__ = ["Architecture", "COEFFICIENT", "LABELS", "architecture", "architecture_of", "coefficient_of", "normalise"]
