"""Dropout with cheaper random masks, for training on a CPU.

PyTorch's dropout on a CPU draws its mask with `bernoulli_`: one call to the random generator per
element, then a division and a multiplication. A fine-tuning step of MiniLM draws 20 masks (the
embeddings; in each layer the attention probabilities, the attention output and the feed-forward
output; the head), and a profile of the fp32 step on a 2-core CPU put `bernoulli_` alone at 7% of the
step (benchmarks/RESULTS.md, issue 13). Here one 64-bit draw gives four 16-bit numbers, and an element
is kept when its number is at least round(p * 65536): a quarter of the draws, and the mask costs about
a quarter of `bernoulli_`'s time. The drop probability is that threshold over 65,536 (p to within
1/131,072), and kept elements are scaled by the inverse of that exact keep probability, so every
activation keeps its expectation, as with `nn.Dropout`. The draws come from torch's default generator,
so `torch.manual_seed` repeats them and a checkpoint's saved RNG state resumes them.

The attention probabilities are dropped inside scaled-dot-product attention, which is not an
`nn.Dropout` module: `use_fast_dropout` also routes a transformers model's attention through
`tunefleet_sdpa`, which in training with dropout on a CPU runs the arithmetic PyTorch itself runs
there (its fused CPU attention kernel takes no dropout, so training already used the plain matrix
products) with the cheaper mask, and otherwise hands over to transformers' own SDPA function.

On a GPU, PyTorch's dropout is one fused kernel already; the loop uses this on CPUs only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_LEVELS = 65536  # 16-bit random numbers
_ATTENTION = "tunefleet_sdpa"


def fast_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """`x` with each element zeroed with probability p (to 1/65,536) and the rest scaled up to keep
    the expectation; differentiable (the gradient goes through the same mask)."""
    threshold = round(p * _LEVELS)
    if threshold == 0:
        return x
    if threshold >= _LEVELS:
        return x * 0.0
    n = x.numel()
    # The full 64-bit range: random_(min, None) draws every bit, where random_() leaves the top bit 0,
    # which would bias every fourth 16-bit number.
    draws = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, None)
    numbers = draws.view(torch.int16)[:n].view(x.shape)  # uniform over -32768..32767
    keep = numbers >= threshold - _LEVELS // 2
    mask = keep.to(x.dtype).mul_(_LEVELS / (_LEVELS - threshold))
    # Autograd keeps only the mask for the backward pass (x * mask: the gradient of x is grad * mask).
    return x * mask


class FastDropout(nn.Dropout):
    """`nn.Dropout` with the cheaper mask (`fast_dropout`); identical in evaluation (a no-op)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return fast_dropout(x, self.p)


def use_fast_dropout(model: nn.Module) -> int:
    """Swap the model's `nn.Dropout` modules for `FastDropout`, and its attention for
    `tunefleet_sdpa` where it uses transformers' SDPA; returns how many modules were swapped.
    Weights, state dict and saved checkpoints are unchanged: the attention setting is not written to
    config.json, and nothing here is saved."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:  # subclasses may do something else; leave them be
                setattr(parent, name, FastDropout(child.p))
                swapped += 1
    uses_sdpa = getattr(getattr(model, "config", None), "_attn_implementation", None) == "sdpa"
    can_switch = getattr(model, "_can_set_attn_implementation", lambda: False)
    if uses_sdpa and can_switch():
        _register_attention()
        model.set_attn_implementation(_ATTENTION)
    return swapped


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(_ATTENTION, _attention)
    # The same masks as "sdpa" (boolean, True = attend), which the hand-over below expects.
    ALL_MASK_ATTENTION_FUNCTIONS.register(_ATTENTION, sdpa_mask)


def _attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
               **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention as transformers' SDPA function computes it, with the cheaper mask for the attention
    probabilities when training on a CPU with dropout. Anything else (evaluation, no dropout, a
    GPU, causal or grouped-query attention) is SDPA itself."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (module.training and dropout > 0 and query.device.type == "cpu" and key.shape[1] == query.shape[1]
             and not getattr(module, "is_causal", False) and kwargs.get("is_causal") is not True
             and (attention_mask is None or attention_mask.dtype == torch.bool))
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-2, -1)) * scaling  # (batch, heads, queries, keys)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
    probabilities = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probabilities = fast_dropout(probabilities, dropout)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None
