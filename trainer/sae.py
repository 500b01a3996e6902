"""The sparse autoencoder and its hand-written forward/backward pass.

Model (``d_in`` inputs, ``d_sae`` features, one token per row of ``x``)::

    f     = relu((x - b_dec) @ W_enc + b_enc)        W_enc [d_in, d_sae], b_enc [d_sae]
    x_hat = f @ W_dec + b_dec                         W_dec [d_sae, d_in], b_dec [d_in]

Loss, with ``B`` tokens in the batch (exactly what is logged)::

    mse  = (1 / (B * d_in)) * sum_b ||x_b - x_hat_b||^2      mean over tokens AND input dimensions
    l1   = (1 / B) * sum_b sum_i f_bi * w_i                  summed over features, mean over tokens
    loss = mse + l1_alpha * l1

with ``w_i = 1`` and unit-norm decoder rows (``variant="standard"``, Anthropic 2023), or
``w_i = ||W_dec[i]||`` and an unconstrained decoder (``variant="april2024"``).

Why by hand and not through autograd: a training step needs five GEMMs (two forward, three
backward). Autograd of ``x - b_dec`` computes a sixth (the gradient with respect to the centred
input) only to reduce it to the ``b_dec`` gradient, which is a cheap matrix-vector product
(``-W_enc @ grad_b_enc``). Writing the backward out also lets every [B, d_sae] temporary live in a
buffer reused from step to step, so glibc does not map and fault 64 MiB afresh each step.

The other variants (``trainer/variants.py`` has their step functions; each is checked against
autograd in float64 by ``tests/test_variants.py``):

- ``topk`` (Gao et al. 2024): ``f = relu(TopK_k(pre))``, ``pre = (x - b_dec) @ W_enc + b_enc``;
  loss = mse + aux_loss_coefficient * aux_loss (AuxK: the dead latents' top ``aux_k``
  pre-activations reconstruct the residual ``x - x_hat``).
- ``batchtopk`` (Bussmann et al. 2024): the ``B * k`` largest ``relu(pre)`` of the whole batch; the
  inference threshold (``threshold``, a JumpReLU threshold shared by all latents) follows the
  smallest selected activation of each batch; AuxK as for topk.
- ``jumprelu`` (Rajamanoharan et al. 2024, arXiv 2407.14435): ``f = pre * H(pre - theta)`` with a
  threshold ``theta`` per latent; loss = mse + l0_coefficient * L0, trained through the
  straight-through estimator with a rectangle kernel of width ``jumprelu_bandwidth``.

All three keep unit-norm decoder rows (as ``standard``) and never resample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class StepStats:
    """On-device scalars of one step (0-dim tensors; nothing here forces a host sync)."""

    loss: torch.Tensor
    """mse + l1_alpha * l1."""
    mse: torch.Tensor
    """Mean squared error per input element (see the module docstring)."""
    l1: torch.Tensor
    """The L1 penalty term before multiplying by l1_alpha."""
    sse: torch.Tensor
    """Sum over the batch of ||x - x_hat||^2 (for explained variance)."""
    fire_count: torch.Tensor | None
    """Per-feature count of tokens with f > 0 in this batch (float [d_sae], whole numbers); None when not asked."""
    aux_loss: torch.Tensor | None = None
    """topk / batchtopk: the AuxK term before multiplying by aux_loss_coefficient (0 without dead latents)."""
    l2_ratio_sum: torch.Tensor | None = None
    """Sum over the batch of ||x_hat_b|| / ||x_b|| (shrinkage; on the normalised inputs); None when not asked."""


def l2_ratio_sum(err: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sum over the rows of ||x_hat|| / ||x|| with ``err = x_hat - x`` (a zero input counts ||x|| as 1e-12)."""
    return (torch.linalg.vector_norm(err + x, dim=1) / torch.linalg.vector_norm(x, dim=1).clamp_min(1e-12)).sum()


#: Variants whose decoder rows are kept at unit norm (the gradient along each row removed, rows renormalised).
UNIT_NORM_VARIANTS = frozenset({"standard", "topk", "batchtopk", "jumprelu"})
#: Variants whose L0 is set by k.
TOPK_VARIANTS = frozenset({"topk", "batchtopk"})


class SparseAutoencoder(torch.nn.Module):
    """An SAE whose ``forward_backward`` fills ``.grad`` of its parameters (``PARAM_NAMES``: the four
    weights, and the per-latent ``threshold`` of a JumpReLU SAE). A BatchTopK SAE also holds the
    inference ``threshold`` it learns (a buffer, saved with the weights)."""

    def __init__(self, d_in: int, d_sae: int, *, variant: str = "standard", device: str | torch.device = "cpu",
                 generator: torch.Generator | None = None, jumprelu_init_threshold: float | None = None,
                 jumprelu_bandwidth: float | None = None, aux_k: int | None = None,
                 topk_threshold_lr: float | None = None) -> None:
        super().__init__()
        self.d_in, self.d_sae, self.variant = int(d_in), int(d_sae), variant
        self.bandwidth = 0.05 if jumprelu_bandwidth is None else float(jumprelu_bandwidth)
        self.aux_k = int(aux_k) if aux_k else max(1, self.d_in // 2)
        self.topk_threshold_lr = 0.01 if topk_threshold_lr is None else float(topk_threshold_lr)
        if jumprelu_init_threshold is None:
            jumprelu_init_threshold = 0.01
        # Decoder rows: random directions. Standard: unit norm (kept so after every step).
        # April 2024: norm 0.1 and free to change (the penalty is weighted by the norm instead).
        w_dec = torch.randn(d_sae, d_in, generator=generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        if variant == "april2024":
            w_dec *= 0.1
        self.W_dec = torch.nn.Parameter(w_dec.to(device))
        # Encoder initialised as the decoder's transpose: at step 0 about half the features fire
        # on every token (the usual starting point the L0 curve sparsifies from).
        self.W_enc = torch.nn.Parameter(w_dec.t().contiguous().to(device))
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae, device=device))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in, device=device))
        self.PARAM_NAMES: tuple[str, ...] = ("W_enc", "b_enc", "W_dec", "b_dec")
        if variant == "jumprelu":
            # the threshold itself (SAELens 6), kept >= 0 after every step (``post_step``)
            self.threshold = torch.nn.Parameter(torch.full((d_sae,), float(jumprelu_init_threshold), device=device))
            self.PARAM_NAMES += ("threshold",)
        elif variant == "batchtopk":
            self.register_buffer("threshold", torch.zeros((), device=device))
        for p in self.parameters():
            p.grad = torch.zeros_like(p)
        self._buf: dict[str, torch.Tensor] = {}
        self.bf16 = False
        #: The torch.distributed context when several ranks train it (trainer/distributed.py): a
        #: BatchTopK step selects over the global batch through it. None in one process.
        self.group: Any = None

    # ------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Feature activations ``f`` for ``x`` [n, d_in] (no gradient). TopK keeps each token's ``k``
        largest (``k`` is required); BatchTopK and JumpReLU apply their threshold (inference)."""
        with torch.no_grad():
            pre = (x - self.b_dec) @ self.W_enc + self.b_enc
            if self.variant == "topk":
                if k is None:
                    raise ValueError("encode: a topk SAE needs k")
                vals, idx = pre.topk(min(int(k), self.d_sae), dim=1)
                return torch.zeros_like(pre).scatter_(1, idx, vals.relu())
            if self.variant in ("batchtopk", "jumprelu"):
                return pre * (pre > self.threshold) * (pre > 0)
            return torch.relu(pre)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``x_hat`` for activations ``f`` (no gradient)."""
        with torch.no_grad():
            return f @ self.W_dec + self.b_dec

    def l1_weights(self) -> torch.Tensor | None:
        """Per-feature L1 weights ``w_i`` (None means all ones)."""
        return self.W_dec.norm(dim=1) if self.variant == "april2024" else None

    def _buffer(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        buf = self._buf.get(name)
        if buf is None or buf.shape != shape:
            buf = torch.empty(shape, device=self.W_dec.device, dtype=self.W_dec.dtype)
            self._buf[name] = buf
        return buf

    def _ones(self, n: int, like: torch.Tensor) -> torch.Tensor:
        ones = self._buf.get("ones")
        if ones is None or ones.shape[0] != n or ones.dtype != like.dtype:
            ones = torch.ones(n, device=like.device, dtype=like.dtype)
            self._buf["ones"] = ones
        return ones

    def _mm(self, out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, bias: torch.Tensor | None = None,
            alpha: float = 1.0) -> torch.Tensor:
        """out = alpha * a @ b (+ bias), in fp32 or with bf16 operands (fp32 result)."""
        if self.bf16:
            prod = torch.mm(a.to(torch.bfloat16), b.to(torch.bfloat16))
            out.copy_(prod)
            if alpha != 1.0:
                out.mul_(alpha)
            if bias is not None:
                out.add_(bias)
            return out
        if bias is None:
            return torch.mm(a, b, out=out) if alpha == 1.0 else out.addmm_(a, b, beta=0.0, alpha=alpha)
        return torch.addmm(bias, a, b, alpha=alpha, out=out)

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward_backward(self, x: torch.Tensor, l1_alpha: float, *, count_fires: bool, k: int | None = None,
                         dead: torch.Tensor | None = None, l2_ratio: bool = False) -> StepStats:
        """Compute the loss on ``x`` [B, d_in] and write the gradients into each ``.grad``.

        ``l1_alpha`` is the variant's coefficient: l1_alpha (standard, april2024), l0_coefficient
        (jumprelu), aux_loss_coefficient (topk, batchtopk: ``k`` active latents per token, and
        ``dead``, bool [d_sae], the latents AuxK revives). ``l2_ratio``: also return the sum over the
        batch of ||x_hat|| / ||x|| (``StepStats.l2_ratio_sum``, on the device)."""
        if self.variant not in ("standard", "april2024"):
            from . import variants

            return variants.forward_backward(self, x, l1_alpha, count_fires=count_fires, k=k, dead=dead,
                                             l2_ratio=l2_ratio)
        B, d = x.shape
        s = self.d_sae
        W_enc, b_enc, W_dec, b_dec = self.W_enc, self.b_enc, self.W_dec, self.b_dec
        xc = self._buffer("xc", (B, d))
        f = self._buffer("f", (B, s))
        err = self._buffer("err", (B, d))
        df = self._buffer("df", (B, s))

        # Forward: GEMM 1 and 2. `f` holds the pre-activation, then relu in place.
        torch.sub(x, b_dec, out=xc)
        self._mm(f, xc, W_enc, bias=b_enc)
        f.relu_()
        self._mm(err, f, W_dec, bias=b_dec)
        err.sub_(x)  # err = x_hat - x
        sse = torch.dot(err.view(-1), err.view(-1))
        mse = sse / (B * d)
        ratio = l2_ratio_sum(err, x) if l2_ratio else None

        # Column sums over the batch as matrix-vector products with a ones vector: on CPU this is
        # several times faster than .sum(dim=0) (and count_nonzero(dim=0) is slower still).
        ones = self._ones(B, x)
        # The penalty. April 2024 weights each feature by its decoder norm.
        col_sum = torch.mv(f.t(), ones)  # [d_sae]
        norms = self.l1_weights()
        l1 = (col_sum @ norms if norms is not None else col_sum.sum()) / B
        loss = mse + l1_alpha * l1
        fire_count = None
        if count_fires:
            mask = torch.gt(f, 0, out=self._buffer("mask", (B, s)))
            fire_count = torch.mv(mask.t(), ones)  # exact integers (float32 is exact below 2^24)

        # Backward. d loss / d x_hat = c * err with c = 2 / (B d).
        c = 2.0 / (B * d)
        # GEMM 3: decoder gradient.
        self._mm(W_dec.grad, f.t(), err, alpha=c)
        torch.mv(err.t(), ones, out=b_dec.grad).mul_(c)
        # GEMM 4: d loss / d f = c * err @ W_dec^T + l1_alpha * w / B (the penalty is the bias term).
        pen = torch.full((s,), l1_alpha / B, device=x.device, dtype=x.dtype) if norms is None else norms * (l1_alpha / B)
        self._mm(df, err, W_dec.t(), bias=pen, alpha=c)
        # relu backward: zero where the feature did not fire (f is the relu output).
        torch.ops.aten.threshold_backward.grad_input(df, f, 0.0, grad_input=df)
        # GEMM 5: encoder gradient, from the centred input (which needs no gradient itself).
        self._mm(W_enc.grad, xc.t(), df)
        torch.mv(df.t(), ones, out=b_enc.grad)
        # b_dec also enters through x - b_dec: a matrix-vector product instead of a sixth GEMM.
        b_dec.grad.addmv_(W_enc, b_enc.grad, alpha=-1.0)
        if norms is not None:
            # d/dW_dec of l1_alpha * sum_i (col_sum_i / B) ||W_dec[i]||
            scale = (col_sum * (l1_alpha / B)) / norms.clamp_min(1e-12)
            W_dec.grad.addcmul_(W_dec, scale[:, None])
        return StepStats(loss=loss, mse=mse, l1=l1, sse=sse, fire_count=fire_count, l2_ratio_sum=ratio)

    @torch.no_grad()
    def project_decoder_grad(self) -> None:
        """Unit-norm variants (standard, topk, batchtopk, jumprelu): remove the gradient component
        parallel to each unit decoder row, so the step moves along the sphere the renormalisation
        keeps it on."""
        if self.variant in UNIT_NORM_VARIANTS:
            g, w = self.W_dec.grad, self.W_dec
            g.sub_(w * (g * w).sum(dim=1, keepdim=True))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Unit-norm variants: rescale decoder rows to unit norm after an optimizer step."""
        if self.variant in UNIT_NORM_VARIANTS:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    @torch.no_grad()
    def post_step(self) -> None:
        """After an optimizer step: unit decoder rows, and a JumpReLU threshold kept >= 0 (below 0
        the gate would pass negative pre-activations; SAELens 6 projects it the same way)."""
        self.normalize_decoder()
        if self.variant == "jumprelu":
            self.threshold.clamp_(min=0.0)

    @torch.no_grad()
    def grad_norm(self) -> torch.Tensor:
        """Global L2 norm of the gradients (0-dim tensor)."""
        norms = torch._foreach_norm([getattr(self, n).grad for n in self.PARAM_NAMES])
        return torch.linalg.vector_norm(torch.stack(norms))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The weights, as saved in ``sae.safetensors``: W_enc, b_enc, W_dec, b_dec, and for jumprelu
        and batchtopk ``threshold`` [d_sae] (BatchTopK's single inference threshold, repeated: a
        JumpReLU threshold per latent, as SAELens saves a BatchTopK SAE)."""
        out = {"W_enc": self.W_enc.data, "b_enc": self.b_enc.data, "W_dec": self.W_dec.data, "b_dec": self.b_dec.data}
        if self.variant == "jumprelu":
            out["threshold"] = self.threshold.data
        elif self.variant == "batchtopk":
            out["threshold"] = self.threshold.expand(self.d_sae)
        return out

    @torch.no_grad()
    def load_tensors(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Copy weights from a checkpoint, checking shapes (one-line ValueError naming ``source``). A
        ``threshold`` is loaded when this SAE has one and the checkpoint holds it (a JumpReLU SAE
        started from another variant's weights keeps its initial threshold)."""
        for name, p in (("W_enc", self.W_enc), ("b_enc", self.b_enc), ("W_dec", self.W_dec), ("b_dec", self.b_dec)):
            if name not in tensors:
                raise ValueError(f"{source}: missing tensor {name}")
            t = tensors[name]
            if tuple(t.shape) != tuple(p.shape):
                raise ValueError(f"{source}: {name} has shape {list(t.shape)}, this SAE needs {list(p.shape)}")
            p.copy_(t.to(p.dtype))
        t = tensors.get("threshold")
        if t is not None and self.variant in ("jumprelu", "batchtopk"):
            if tuple(t.shape) != (self.d_sae,):
                raise ValueError(f"{source}: threshold has shape {list(t.shape)}, this SAE needs [{self.d_sae}]")
            if self.variant == "jumprelu":
                self.threshold.copy_(t.to(self.threshold.dtype))
            else:
                self.threshold.copy_(t[0].to(self.threshold.dtype))


def explained_variance(sse: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """1 - sum_b ||x_b - x_hat_b||^2 / sum_b ||x_b - mean_b(x)||^2 over one batch (0-dim tensor)."""
    ones = torch.ones(x.shape[0], device=x.device, dtype=x.dtype)
    m = torch.mv(x.t(), ones) / x.shape[0]  # column mean as a matrix-vector product (fast on CPU)
    total = torch.dot(x.view(-1), x.view(-1)) - x.shape[0] * torch.dot(m, m)
    return 1.0 - sse / total.clamp_min(1e-30)
