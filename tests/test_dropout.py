"""The cheaper dropout mask (train/dropout.py): its rate, scale and gradient worked out by hand, its
attention against PyTorch's own scaled-dot-product attention, and a model that trains with it and
evaluates exactly as before. No Ray."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tunefleet.train.dropout import FastDropout, _attention, fast_dropout, use_fast_dropout


def test_the_drop_rate_and_the_scale_are_the_ones_asked_for():
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    y = fast_dropout(x, 0.1)
    # round(0.1 * 65536) = 6554 of 65,536 numbers drop: p = 0.100006; kept values are scaled by
    # 65536 / (65536 - 6554) = 65536 / 58982 = 1.1111186...
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 65536 / 58982))
    dropped = 1 - kept.numel() / x.numel()
    # Binomial standard deviation sqrt(0.1 * 0.9 / 1e6) = 0.0003: five of them. A generator that left
    # the top bit of every 64-bit draw at 0 (torch's random_() does) keeps every fourth 16-bit number
    # non-negative, so never dropped: a rate of 0.075.
    assert abs(dropped - 6554 / 65536) < 0.0015, dropped
    assert abs(y.mean().item() - 1.0) < 0.005  # the expectation is kept


def test_the_gradient_goes_through_the_same_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 48, requires_grad=True)
    y = fast_dropout(x, 0.3)
    y.backward(torch.ones_like(y))
    scale = 65536 / (65536 - round(0.3 * 65536))
    expected = torch.where(y != 0, torch.tensor(scale), torch.tensor(0.0))
    assert torch.allclose(x.grad, expected)


def test_the_masks_repeat_with_the_seed_and_change_without_it():
    x = torch.ones(4096)
    torch.manual_seed(7)
    first = fast_dropout(x, 0.5)
    torch.manual_seed(7)
    again = fast_dropout(x, 0.5)
    different = fast_dropout(x, 0.5)
    assert torch.equal(first, again)
    assert not torch.equal(first, different)


def test_no_drop_rate_is_a_no_op_and_evaluation_never_drops():
    x = torch.randn(10, 10)
    assert fast_dropout(x, 0.0) is x
    module = FastDropout(0.4).eval()
    assert module(x) is x
    assert isinstance(module, torch.nn.Dropout) and module.p == 0.4


class _Attention(torch.nn.Module):
    """What transformers hands an attention function: a module with `training` and `is_causal`."""

    is_causal = False


def _qkv(seed: int, batch: int = 3, heads: int = 2, length: int = 6, width: int = 8):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, length, width, generator=generator, requires_grad=True) for _ in range(3)]


def test_the_cpu_attention_is_sdpa_when_nothing_is_dropped():
    # A drop rate below 1/131,072 rounds to no drop: the plain path runs (training, rate > 0) and must
    # then be exactly SDPA without dropout, padding mask included, forward and backward.
    module = _Attention().train()
    mask = torch.ones(3, 1, 6, 6, dtype=torch.bool)
    mask[1, :, :, 4:] = False  # the second example has two padding tokens
    q, k, v = _qkv(0)
    ours, _ = _attention(module, q, k, v, mask, dropout=1e-9, scaling=0.3)
    ours.sum().backward()
    our_grads = [t.grad.clone() for t in (q, k, v)]
    q2, k2, v2 = _qkv(0)
    theirs = F.scaled_dot_product_attention(q2, k2, v2, attn_mask=mask, scale=0.3).transpose(1, 2)
    theirs.sum().backward()
    assert torch.allclose(ours, theirs, atol=1e-6)
    for mine, reference in zip(our_grads, (q2.grad, k2.grad, v2.grad)):
        assert torch.allclose(mine, reference, atol=1e-5)


def test_the_attention_drops_attention_probabilities_and_never_attends_to_padding():
    # All scores equal (zero queries): each query spreads 1/4 over the 4 real keys and 0 over the 2
    # padding keys. With the identity as values, the output row is the probabilities themselves, so
    # after dropout at p = 0.5 (threshold 32768, scale exactly 2) every entry is 0 or 2/4 on a real
    # key, and 0 on a padding key.
    module = _Attention().train()
    keys, width = 6, 6
    q = torch.zeros(64, 1, keys, width)
    k = torch.randn(64, 1, keys, width)
    v = torch.eye(keys).expand(64, 1, keys, width)
    mask = torch.ones(64, 1, keys, keys, dtype=torch.bool)
    mask[..., 4:] = False
    torch.manual_seed(3)
    out, _ = _attention(module, q, k, v, mask, dropout=0.5)
    out = out.transpose(1, 2)  # back to (batch, heads, queries, keys)
    real, padding = out[..., :4], out[..., 4:]
    assert torch.all(padding == 0)
    assert set(real.unique().tolist()) == {0.0, 0.5}
    assert abs((real == 0).float().mean().item() - 0.5) < 0.03  # 6,144 entries: std 0.006


def test_evaluation_is_sdpa_itself():
    q, k, v = _qkv(2)
    module = _Attention().eval()
    ours, _ = _attention(module, q, k, v, None, dropout=0.0, scaling=None)
    theirs = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    assert torch.equal(ours, theirs)


def test_a_model_swaps_every_dropout_and_evaluates_exactly_as_before(tiny_model):
    from tunefleet.tasks import get_task
    from tunefleet.train.models import build_model

    torch.manual_seed(0)
    original = build_model(get_task("token-classification"), tiny_model, ["O", "B-X", "I-X"], 0.2)
    model = copy.deepcopy(original)
    swapped = use_fast_dropout(model)
    assert swapped == sum(type(m) is torch.nn.Dropout for m in original.modules()) > 0
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    assert model.config._attn_implementation == "tunefleet_sdpa"
    assert original.config._attn_implementation == "sdpa"
    ids = torch.randint(1000, 3000, (4, 9))
    attention = torch.ones(4, 9, dtype=torch.long)
    attention[2, 6:] = 0
    with torch.no_grad():
        before = original.eval()(input_ids=ids, attention_mask=attention).logits
        after = model.eval()(input_ids=ids, attention_mask=attention).logits
        assert torch.equal(before, after)
        model.train()
        torch.manual_seed(5)
        dropped = model(input_ids=ids, attention_mask=attention).logits
    assert not torch.allclose(dropped, after)  # dropout is on in training


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_a_dropout_layer_has_the_rate_of_nn_dropout(p):
    torch.manual_seed(11)
    x = torch.ones(400_000)
    ours = (FastDropout(p).train()(x) == 0).float().mean().item()
    assert abs(ours - p) < 0.003  # binomial std at most 0.0008
