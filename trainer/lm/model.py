"""A small byte-level decoder-only transformer (pre-LayerNorm, causal self-attention, GELU MLP).

Real, if small: token + learned position embeddings, ``n_layer`` blocks, a final LayerNorm and an
untied unembedding. ``forward(ids, capture_layer=L)`` also returns the residual stream after
block ``L`` (``resid_post`` of block L, before the final LayerNorm): what SAE-Track reads.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    """One transformer block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model {d_model} is not a multiple of n_head {n_head}")
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.out = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        shape = (b, t, self.n_head, d // self.n_head)
        q, k, v = (z.view(shape).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyLM(nn.Module):
    """Byte-level language model; ``vocab`` is 256."""

    def __init__(self, *, vocab: int, d_model: int, n_layer: int, n_head: int, ctx: int) -> None:
        super().__init__()
        self.ctx = ctx
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(ctx, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, capture_layer: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``[b, t, vocab]`` and, when ``capture_layer`` is given, the residual stream after
        that block ``[b, t, d_model]`` (the forward pass stops there when logits are not needed)."""
        t = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))[None]
        captured = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == capture_layer:
                captured = x
        return self.head(self.ln_f(x)), captured

    def loss(self, windows: torch.Tensor) -> torch.Tensor:
        """Mean next-byte cross-entropy (nats) on windows ``[b, ctx+1]``."""
        logits, _ = self(windows[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))
