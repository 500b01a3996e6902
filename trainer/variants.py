"""The steps of the ``topk``, ``batchtopk`` and ``jumprelu`` SAEs, written out by hand like the
standard one (``sae.SparseAutoencoder.forward_backward``): every gradient below is checked against
autograd in float64 by ``tests/test_variants.py``.

Notation as in ``sae.py``: ``B`` tokens, ``d`` = d_in, ``s`` = d_sae, ``xc = x - b_dec``,
``pre = xc @ W_enc + b_enc``, ``err = x_hat - x``, ``mse = ||err||^2 / (B d)``, ``c = 2 / (B d)``.

**TopK / BatchTopK** (Gao et al. 2024; Bussmann et al. 2024). ``f`` is nonzero on ``k`` latents
per token (TopK) or on the ``B * k`` largest ``relu(pre)`` of the batch (BatchTopK), where it is
``relu(pre)``. Only the encoder GEMM is dense: the decoder (``x_hat = f @ W_dec``, an
``embedding_bag``), the decoder gradient (``f^T @ c err``, a sparse-dense product), the latents'
gradient (``c err @ W_dec^T`` sampled at the active entries, ``torch.sparse.sampled_addmm``) and the
encoder gradient (``xc^T @ df``, sparse-dense) touch the ``B * k`` active entries only: on the
benchmark's shapes (d_in 512, d_sae 4096, k 32) a step costs about a third of the standard one.

AuxK: with ``D`` the latents that have not fired for ``aux_dead_window`` steps (``dead``),
``k_aux = min(aux_k, |D|)`` and ``scale = min(|D| / aux_k, 1)`` (SAELens' and sparsify's
rule), ``e_hat = relu(TopK_k_aux(pre restricted to D)) @ W_dec`` (no bias) approximates the residual
``e = x - x_hat`` (held fixed), and::

    aux_loss = scale * ||e_hat - e||^2 / (B d)         (logged as aux_loss)
    loss     = mse + aux_loss_coefficient * aux_loss

**JumpReLU** (Rajamanoharan et al. 2024). ``f = pre * H(pre - theta)`` (``theta >= 0`` per latent),
``l0 = (1/B) sum_b sum_i H(pre_bi - theta_i)`` (the logged ``l0``), ``loss = mse + l0_coefficient *
l0``. The straight-through estimator of the paper, with the rectangle kernel
``K(u) = 1{|u| < 1/2}`` and bandwidth ``eps``::

    d f_bi / d pre_bi   = H(pre_bi - theta_i)
    d f_bi / d theta_i  = -(theta_i / eps) K((pre_bi - theta_i) / eps)
    d H / d theta_i     = -(1 / eps) K((pre_bi - theta_i) / eps)      (and 0 with respect to pre)

Five GEMMs as in the standard step; the kernel adds three passes over the [B, d_sae] batch.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .sae import SparseAutoencoder, StepStats


def forward_backward(sae: "SparseAutoencoder", x: torch.Tensor, coef: float, *, count_fires: bool,
                     k: int | None, dead: torch.Tensor | None, l2_ratio: bool = False) -> "StepStats":
    """The step of ``sae.variant`` (topk, batchtopk, jumprelu): loss on ``x``, gradients in ``.grad``
    (``l2_ratio``: also the sum over the batch of ||x_hat|| / ||x||)."""
    if sae.variant == "jumprelu":
        return _jumprelu(sae, x, float(coef), count_fires, l2_ratio)
    if k is None or k < 1:
        raise ValueError(f"{sae.variant}: k must be a positive number of latents, got {k}")
    return _topk(sae, x, float(coef), int(k), dead, l2_ratio)


# ------------------------------------------------------------------------------------------------
# TopK and BatchTopK
# ------------------------------------------------------------------------------------------------


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta": once per process, not for users
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, shape, check_invariants=False)


def select_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's ``k`` largest entries as CSR arrays ``(crow, col, value)``, columns ascending in
    each row (values are the raw pre-activations)."""
    B, s = pre.shape
    k = min(k, s)
    vals, idx = pre.topk(k, dim=1, sorted=False)
    idx, order = idx.sort(dim=1)
    vals = vals.gather(1, order)
    crow = torch.arange(0, B * k + 1, k, device=pre.device, dtype=torch.int64)
    return crow, idx.reshape(-1), vals.reshape(-1)


def select_batchtopk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``B * k`` largest entries of the whole batch as CSR arrays (row-major order).

    On a CPU a full sort of the ``B * d_sae`` entries is the slow part (280 ms on the benchmark's
    batch), so the batch's top is taken among each row's ``4 k`` largest: exact unless a row holds
    positive entries of the batch's top beyond its own ``4 k`` (its smallest candidate is positive
    and not below the selection's smallest value), in which case the whole batch is sorted after
    all. That check is a host decision, so where the step must not synchronise (``sync_free``) the
    batch's top is taken directly."""
    B, s = pre.shape
    n = min(B * k, B * s)
    kr = min(s, 4 * k)
    flat = None
    if kr < s and not sync_free(pre):
        cv, ci = pre.topk(kr, dim=1, sorted=False)
        top, pos = cv.reshape(-1).topk(n, sorted=False)
        theta = top.min()
        row_min = cv.min(dim=1).values
        if not bool(((row_min >= theta) & (row_min > 0)).any()):
            rows = torch.div(pos, kr, rounding_mode="floor")
            flat = rows * s + ci.reshape(-1)[pos]
    if flat is None:
        top, flat = pre.reshape(-1).topk(n, sorted=False)
    flat, order = flat.sort()
    vals = top[order]
    rows = torch.div(flat, s, rounding_mode="floor")
    col = flat - rows * s
    crow = torch.zeros(B + 1, dtype=torch.int64, device=pre.device)
    torch.cumsum(_count(rows, B), 0, out=crow[1:])
    return crow, col, vals


def select_batchtopk_global(pre: torch.Tensor, k: int, group: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """BatchTopK over the global batch when each of ``group.world`` ranks holds ``pre`` for its own
    rows: every rank offers its ``B k`` largest entries (``B`` the global batch: all of the global
    top may sit in one rank's rows), one all_gather, the ``B k``-th largest of them is the global
    threshold, and each rank keeps its entries at or above it, in row-major CSR arrays as
    ``select_batchtopk``. Equal to one process's selection but for exact ties at the threshold."""
    b, s = pre.shape
    n_global = b * group.world * k
    flat = pre.reshape(-1)
    cand = flat.topk(min(n_global, flat.numel()), sorted=False).values
    theta = group.all_gather_cat(cand).topk(n_global, sorted=False).values.min()
    idx = torch.nonzero(flat >= theta).squeeze(1)  # row-major, ascending
    rows = torch.div(idx, s, rounding_mode="floor")
    crow = torch.zeros(b + 1, dtype=torch.int64, device=pre.device)
    torch.cumsum(_count(rows, b), 0, out=crow[1:])
    return crow, idx - rows * s, flat[idx]


#: Whether the TopK / BatchTopK step avoids every host synchronisation (data-dependent shapes,
#: host-side decisions): None = on CUDA only, where the host must run ahead of the GPU; the CPU
#: keeps its faster data-dependent forms. Tests set it to check both forms' gradients on a CPU.
SYNC_FREE: bool | None = None


def sync_free(t: torch.Tensor) -> bool:
    """Whether the step on ``t``'s device uses the sync-free forms (``SYNC_FREE``)."""
    return SYNC_FREE if SYNC_FREE is not None else t.device.type == "cuda"


def _count(index: torch.Tensor, n: int, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """How often each of ``0..n-1`` occurs in ``index`` (``bincount`` without its host sync)."""
    out = torch.zeros(n, dtype=dtype, device=index.device)
    return out.index_add_(0, index, torch.ones(index.shape, dtype=dtype, device=index.device))


#: Below this many multiply-adds in one dense [B, d_sae] x [d_sae, d_in] product, the TopK step runs
#: the standard step's dense GEMMs on a scattered [B, d_sae] copy of f: each sparse call costs tens of
#: microseconds whatever its size, which a small SAE's whole dense step does not (docs/trainer.md).
DENSE_BELOW = 1 << 26


def _topk(sae: "SparseAutoencoder", x: torch.Tensor, coef: float, k: int, dead: torch.Tensor | None,
          l2_ratio: bool = False) -> "StepStats":
    from .sae import StepStats, l2_ratio_sum

    B, d = x.shape
    s = sae.d_sae
    W_enc, b_enc, W_dec, b_dec = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec
    xc = sae._buffer("xc", (B, d))
    pre = sae._buffer("pre", (B, s))
    torch.sub(x, b_dec, out=xc)
    sae._mm(pre, xc, W_enc, bias=b_enc)  # GEMM 1, the one dense GEMM of the sparse path
    dense = B * s * d < DENSE_BELOW
    if sae.variant == "batchtopk" and sae.group is not None:
        crow, col, raw = select_batchtopk_global(pre, k, sae.group)
    elif sae.variant == "batchtopk":
        crow, col, raw = select_batchtopk(pre, k)
    elif dense:
        raw, col = pre.topk(min(k, s), dim=1, sorted=False)
        crow = None
    else:
        crow, col, raw = select_topk(pre, k)
    val = raw.relu()
    if sae.variant == "batchtopk":
        # the inference threshold: EMA of the smallest positive selected activation of the (global)
        # batch, kept when none is positive; without a host round trip
        lr = sae.topk_threshold_lr
        smallest = torch.where(val > 0, val, torch.full_like(val, math.inf)).min().to(sae.threshold.dtype)
        if sae.group is not None:
            sae.group.reduce_min(smallest)
        moved = sae.threshold * (1.0 - lr) + smallest * lr
        sae.threshold.copy_(torch.where(torch.isfinite(smallest), moved, sae.threshold))
    c = 2.0 / (B * d)
    ones = sae._ones(B, x)
    if dense:
        f = sae._buffer("f", (B, s))
        f.zero_()
        if crow is None:
            f.scatter_(1, col, val)
        else:
            f.view(-1).index_put_((_rows(crow, B, col.numel()) * s + col,), val)
        err = sae._buffer("err", (B, d))
        sae._mm(err, f, W_dec, bias=b_dec)                              # GEMM 2
        err.sub_(x)
        sse = torch.dot(err.view(-1), err.view(-1))
        ratio = l2_ratio_sum(err, x) if l2_ratio else None
        mask = torch.gt(f, 0, out=sae._buffer("mask", (B, s)))
        fire_count = torch.mv(mask.t(), ones)
        sae._mm(W_dec.grad, f.t(), err, alpha=c)                        # GEMM 3
        torch.mv(err.t(), ones, out=b_dec.grad).mul_(c)
        df = sae._buffer("df", (B, s))
        sae._mm(df, err, W_dec.t(), alpha=c)                            # GEMM 4
        torch.ops.aten.threshold_backward.grad_input(df, f, 0.0, grad_input=df)
        sae._mm(W_enc.grad, xc.t(), df)                                 # GEMM 5
        torch.mv(df.t(), ones, out=b_enc.grad)
    else:
        fs = _Csr(crow, col, val, (B, s))  # type: ignore[arg-type]
        active = val > 0
        err = fs.decode(W_dec).add_(b_dec).sub_(x)
        sse = torch.dot(err.view(-1), err.view(-1))
        ratio = l2_ratio_sum(err, x) if l2_ratio else None
        fire_count = torch.zeros(s, dtype=x.dtype, device=x.device).index_add_(0, col, active.to(x.dtype))
        g = err * c
        W_dec.grad.copy_(fs.t_matmul(val, g))                           # f^T @ g, sparse
        torch.mv(g.t(), ones, out=b_dec.grad)
        dval = fs.sampled(g, W_dec) * active                            # (g @ W_dec^T) at f's entries
        W_enc.grad.copy_(fs.t_matmul(dval, xc).t())                     # xc^T @ dpre, sparse
        b_enc.grad.zero_().index_add_(0, col, dval)
    mse = sse / (B * d)

    aux = torch.zeros((), dtype=x.dtype, device=x.device)
    loss = mse
    if dead is not None and coef > 0 and sync_free(x):
        aux = _auxk_sync_free(sae, x, xc, pre, err, dead, coef * c, ones)
        loss = mse + coef * aux
    elif dead is not None and coef > 0:
        di = torch.nonzero(dead).flatten()
        n_dead = int(di.numel())
        if n_dead:
            k_aux = min(sae.aux_k, n_dead)
            scale = min(n_dead / sae.aux_k, 1.0)
            dead_pre = pre.index_select(1, di)
            w = coef * scale * c
            if dense or n_dead <= 4 * k_aux:  # the dead latents' columns only: [B, n_dead] products
                if k_aux == n_dead:
                    a = dead_pre.relu_()  # every dead latent takes part
                else:
                    av, ai = dead_pre.topk(k_aux, dim=1, sorted=False)
                    a = torch.zeros_like(dead_pre).scatter_(1, ai, av.relu_())
                wd = W_dec.index_select(0, di)
                r = torch.addmm(err, a, wd)                             # e_hat - e (e = x - x_hat = -err)
                aux = scale * torch.dot(r.view(-1), r.view(-1)) / (B * d)
                ga = r.mul_(w)
                W_dec.grad.index_add_(0, di, a.t() @ ga)
                da = (ga @ wd.t()).mul_(a > 0)
                W_enc.grad.index_add_(1, di, xc.t() @ da)
                b_enc.grad.index_add_(0, di, torch.mv(da.t(), ones))
            else:
                av, ai = dead_pre.topk(k_aux, dim=1, sorted=False)
                ai, order = ai.sort(dim=1)
                av = av.gather(1, order).reshape(-1).relu_()
                acol = di[ai.reshape(-1)]
                fa = _Csr(torch.arange(0, B * k_aux + 1, k_aux, device=x.device, dtype=torch.int64), acol, av, (B, s))
                r = fa.decode(W_dec).add_(err)
                aux = scale * torch.dot(r.view(-1), r.view(-1)) / (B * d)
                ga = r.mul_(w)
                W_dec.grad.add_(fa.t_matmul(av, ga))
                dav = fa.sampled(ga, W_dec) * (av > 0)
                W_enc.grad.add_(fa.t_matmul(dav, xc).t())
                b_enc.grad.index_add_(0, acol, dav)
            loss = mse + coef * aux
    b_dec.grad.addmv_(W_enc, b_enc.grad, alpha=-1.0)
    return StepStats(loss=loss, mse=mse, l1=None, sse=sse, fire_count=fire_count, aux_loss=aux,  # type: ignore[arg-type]
                     l2_ratio_sum=ratio)


def _auxk_sync_free(sae: "SparseAutoencoder", x: torch.Tensor, xc: torch.Tensor, pre: torch.Tensor,
                    err: torch.Tensor, dead: torch.Tensor, w: float, ones: torch.Tensor) -> torch.Tensor:
    """AuxK with no host synchronisation: the dead latents' count stays on the device. Each row's
    ``aux_k`` largest pre-activations among the dead latents, taken from the whole row with the
    live latents masked to -inf (with fewer dead latents than ``aux_k`` the extra picks are masked
    entries, which the ReLU makes 0: every dead latent takes part, as in the host form); the loss
    and its gradients are scaled by min(n_dead / aux_k, 1), which is 0 with no dead latent. Adds
    the gradients to ``.grad``; returns the aux loss (before the coefficient). ``w``: coef * 2/(B d)."""
    B, d = x.shape
    s = sae.d_sae
    W_enc, b_enc, W_dec = sae.W_enc, sae.b_enc, sae.W_dec
    k_aux = min(sae.aux_k, s)
    scale = (dead.sum().to(x.dtype) / sae.aux_k).clamp_(max=1.0)
    masked = pre.masked_fill(~dead[None, :], -math.inf)
    av, ai = masked.topk(k_aux, dim=1, sorted=False)
    ai, order = ai.sort(dim=1)
    av = av.gather(1, order).reshape(-1).relu_()
    acol = ai.reshape(-1)
    fa = _Csr(torch.arange(0, B * k_aux + 1, k_aux, device=x.device, dtype=torch.int64), acol, av, (B, s))
    r = fa.decode(W_dec).add_(err)                                   # e_hat - e (e = x - x_hat = -err)
    aux = scale * torch.dot(r.view(-1), r.view(-1)) / (B * d)
    ga = r.mul_(scale * w)
    W_dec.grad.add_(fa.t_matmul(av, ga))
    dav = fa.sampled(ga, W_dec) * (av > 0)
    W_enc.grad.add_(fa.t_matmul(dav, xc).t())
    b_enc.grad.index_add_(0, acol, dav)
    return aux


def _rows(crow: torch.Tensor, B: int, nnz: int) -> torch.Tensor:
    """The row of each of the ``nnz`` entries (``output_size`` given: no host synchronisation)."""
    return torch.repeat_interleave(torch.arange(B, device=crow.device), crow.diff(), output_size=nnz)


class _Csr:
    """Products with an f given as CSR arrays (``crow``, ``col``, ``val``; columns ascending in
    each row): an ``embedding_bag`` for ``f @ W_dec``, sparse-dense products for ``f^T @ g``, and
    ``sampled_addmm`` for a dense product read at f's entries only."""

    def __init__(self, crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> None:
        self.crow, self.col, self.val, self.shape = crow, col, val, shape
        self._t: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def decode(self, W_dec: torch.Tensor) -> torch.Tensor:
        """``f @ W_dec`` (no bias)."""
        return F.embedding_bag(self.col, W_dec, self.crow[:-1], mode="sum", per_sample_weights=self.val)

    def t_matmul(self, val: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``f'^T @ g`` where f' has this pattern and values ``val`` ([d_sae, g's width]), as a CSR
        product with f^T built once per pattern (``csr.t() @ g`` would convert, sorting, each time)."""
        if self._t is None:
            B, s = self.shape
            perm = torch.argsort(self.col, stable=True)  # by latent, tokens ascending within each
            tcrow = torch.zeros(s + 1, dtype=torch.int64, device=self.col.device)
            torch.cumsum(_count(self.col, s), 0, out=tcrow[1:])
            self._t = (perm, tcrow, _rows(self.crow, B, self.col.numel())[perm])
        perm, tcrow, trow = self._t
        return _csr(tcrow, trow, val[perm], (self.shape[1], self.shape[0])) @ g

    def sampled(self, g: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
        """``(g @ W_dec^T)`` at the pattern's entries (values only)."""
        pattern = _csr(self.crow, self.col, torch.zeros_like(self.val), self.shape)
        return torch.sparse.sampled_addmm(pattern, g, W_dec.t(), beta=0.0).values()


# ------------------------------------------------------------------------------------------------
# JumpReLU
# ------------------------------------------------------------------------------------------------


def _jumprelu(sae: "SparseAutoencoder", x: torch.Tensor, coef: float, count_fires: bool,
              l2_ratio: bool = False) -> "StepStats":
    from .sae import StepStats, l2_ratio_sum

    B, d = x.shape
    s = sae.d_sae
    W_enc, b_enc, W_dec, b_dec, theta = sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.threshold
    eps = sae.bandwidth
    xc = sae._buffer("xc", (B, d))
    pre = sae._buffer("pre", (B, s))
    f = sae._buffer("f", (B, s))
    gate = sae._buffer("mask", (B, s))
    err = sae._buffer("err", (B, d))
    df = sae._buffer("df", (B, s))

    torch.sub(x, b_dec, out=xc)
    sae._mm(pre, xc, W_enc, bias=b_enc)                 # GEMM 1
    torch.gt(pre, theta, out=gate)                      # H(pre - theta) as 0/1
    torch.mul(pre, gate, out=f)
    sae._mm(err, f, W_dec, bias=b_dec)                  # GEMM 2
    err.sub_(x)
    sse = torch.dot(err.view(-1), err.view(-1))
    mse = sse / (B * d)
    ratio = l2_ratio_sum(err, x) if l2_ratio else None
    ones = sae._ones(B, x)
    fire_count = torch.mv(gate.t(), ones)               # tokens each latent fired on
    l0 = fire_count.sum() / B
    loss = mse + coef * l0

    c = 2.0 / (B * d)
    sae._mm(W_dec.grad, f.t(), err, alpha=c)            # GEMM 3
    torch.mv(err.t(), ones, out=b_dec.grad).mul_(c)
    sae._mm(df, err, W_dec.t(), alpha=c)                # GEMM 4: d loss / d f
    # the kernel: near = K((pre - theta) / eps), reusing `pre` (no longer needed as such)
    near = pre.sub_(theta).abs_().lt_(0.5 * eps)
    # d loss / d theta_i = -(1/eps) [theta_i sum_b df_bi near_bi + (coef / B) sum_b near_bi]
    n_near = torch.mv(near.t(), ones)
    near.mul_(df)
    theta.grad.copy_(torch.mv(near.t(), ones).mul_(theta).add_(n_near, alpha=coef / B).mul_(-1.0 / eps))
    df.mul_(gate)                                       # d loss / d pre = df * H
    sae._mm(W_enc.grad, xc.t(), df)                     # GEMM 5
    torch.mv(df.t(), ones, out=b_enc.grad)
    b_dec.grad.addmv_(W_enc, b_enc.grad, alpha=-1.0)
    return StepStats(loss=loss, mse=mse, l1=None, sse=sse,  # type: ignore[arg-type]
                     fire_count=fire_count if count_fires else None, l2_ratio_sum=ratio)
