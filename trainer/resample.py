"""Dead-feature resampling, following Anthropic's 2023 recipe ("Towards Monosemanticity", appendix).

For the features that have not fired in the last ``dead_window`` steps:

1. score ``resample_tokens`` fresh inputs by the current SAE's reconstruction loss
   ``L_b = ||x_b - x_hat_b||^2``;
2. draw one input per dead feature with probability proportional to ``L_b ** 2``;
3. decoder row  := the drawn input as the encoder sees it, ``x - b_dec``, scaled to unit norm;
4. encoder column := that unit vector * ``resample_encoder_scale`` (0.2) * the mean norm of the
   encoder columns of the alive features; encoder bias := 0;
5. zero Adam's first and second moments for those rows/columns (``b_enc`` entries too), so the
   stale moments of the dead feature do not push the new one around.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sae import SparseAutoencoder


@dataclass(frozen=True)
class ResampleResult:
    """What one resampling did."""

    features: list[int]
    """Indices of the resampled (previously dead) features."""
    mean_alive_encoder_norm: float | None
    """The norm the new encoder columns were scaled from (times resample_encoder_scale)."""
    mean_loss: float | None
    """Mean reconstruction loss ||x - x_hat||^2 on the scored inputs."""


@torch.no_grad()
def resample_dead(sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, dead: torch.Tensor,
                  inputs: torch.Tensor, *, encoder_scale: float, generator: torch.Generator) -> ResampleResult:
    """Resample the features where ``dead`` (bool [d_sae]) is True, drawing from ``inputs`` [n, d_in]."""
    idx = torch.nonzero(dead).flatten()
    if idx.numel() == 0:
        return ResampleResult([], None, None)
    # 1. loss per input, in chunks to bound memory
    losses = torch.cat([((sae.decode(sae.encode(chunk)) - chunk) ** 2).sum(dim=1) for chunk in inputs.split(4096)])
    weights = losses.double() ** 2
    if not torch.isfinite(weights).all() or weights.sum() <= 0:
        weights = torch.ones_like(weights)
    # 2. one input per dead feature, probability proportional to loss squared
    pick = torch.multinomial(weights.cpu(), idx.numel(), replacement=True, generator=generator).to(inputs.device)
    centred = inputs[pick] - sae.b_dec
    directions = centred / centred.norm(dim=1, keepdim=True).clamp_min(1e-12)
    # 3-4. decoder rows and encoder columns
    alive = ~dead
    enc_norms = sae.W_enc.norm(dim=0)
    mean_alive = float(enc_norms[alive].mean()) if alive.any() else 1.0
    sae.W_dec[idx] = directions
    sae.W_enc[:, idx] = (directions * (encoder_scale * mean_alive)).t()
    sae.b_enc[idx] = 0.0
    # 5. reset Adam moments for exactly those entries
    for p, sl in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,))):
        state = optimizer.state.get(p)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][sl] = 0.0
    return ResampleResult(idx.tolist(), mean_alive, float(losses.mean()))
