"""fp32 linear layers through oneDNN (train/onednn.py): the forward product and all three gradients
worked out by hand, a frozen weight, the hand-over to `nn.Linear` under autocast, and a model whose
linear layers all swap and then train and evaluate as `nn.Linear` does. No Ray."""

from __future__ import annotations

import copy

import pytest
import torch

from tunefleet.train.onednn import MIN_WEIGHTS, OneDNNLinear, available, use_onednn_linear

pytestmark = pytest.mark.skipif(not available(), reason="this torch has no usable oneDNN linear op")


def _layer(weight: list[list[float]], bias: list[float] | None) -> OneDNNLinear:
    layer = OneDNNLinear(len(weight[0]), len(weight), bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        if bias is not None:
            layer.bias.copy_(torch.tensor(bias))
    return layer


def test_the_product_and_its_three_gradients_are_the_hand_worked_ones():
    # W = [[1, 0], [0, 1], [1, 1]], b = [0.5, -1, 0]; x = [[1, 2], [3, 4]]:
    # y = x @ W.T + b = [[1 + .5, 2 - 1, 3], [3 + .5, 4 - 1, 7]].
    layer = _layer([[1, 0], [0, 1], [1, 1]], [0.5, -1, 0])
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    y = layer(x)
    assert torch.equal(y, torch.tensor([[1.5, 1.0, 3.0], [3.5, 3.0, 7.0]]))
    # Upstream gradient g = [[1, 0, 2], [0, 1, 0]]:
    # dx = g @ W = [[1 + 2, 2], [0, 1]]; dW = g.T @ x = [[1, 2], [3, 4], [2, 4]]; db = g summed = [1, 1, 2].
    y.backward(torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]))
    assert torch.equal(x.grad, torch.tensor([[3.0, 2.0], [0.0, 1.0]]))
    assert torch.equal(layer.weight.grad, torch.tensor([[1.0, 2.0], [3.0, 4.0], [2.0, 4.0]]))
    assert torch.equal(layer.bias.grad, torch.tensor([1.0, 1.0, 2.0]))


@pytest.mark.parametrize("by_mkl", [None, True, False])
def test_a_narrowing_layer_s_weight_gradient_is_the_hand_worked_one_by_either_engine(by_mkl):
    """A layer narrower out than in takes its weight gradient from oneDNN by default (None), a wider
    one (above) from MKL; forced either way, the numbers are the same.
    W = [[1, 0, 1], [0, 1, 1]], x = [[1, 2, 3], [0, 1, 0]], g = [[1, 2], [3, 0]]:
    dW = g.T @ x = [[1 + 0, 2 + 3, 3 + 0], [2, 4, 6]]; dx = g @ W = [[1, 2, 3], [3, 0, 3]]."""
    layer = _layer([[1, 0, 1], [0, 1, 1]], None)
    layer.weight_grad_by_mkl = by_mkl
    x = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]], requires_grad=True)
    layer(x).backward(torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    assert torch.equal(layer.weight.grad, torch.tensor([[1.0, 5.0, 3.0], [2.0, 4.0, 6.0]]))
    assert torch.equal(x.grad, torch.tensor([[1.0, 2.0, 3.0], [3.0, 0.0, 3.0]]))


def test_a_batch_of_sequences_and_a_frozen_weight_without_bias():
    """(batch, tokens, features) in and out, as in a transformer; a frozen weight (LoRA's base layer)
    gets no gradient while the input's still flows: dx = g @ W, with g all ones here, so every row of
    dx is W's column sums [1 + 0 + 1, 0 + 1 + 1] = [2, 2]."""
    layer = _layer([[1, 0], [0, 1], [1, 1]], None)
    layer.weight.requires_grad_(False)
    x = torch.arange(12.0).view(2, 3, 2).requires_grad_()
    y = layer(x)
    assert y.shape == (2, 3, 3)
    assert torch.equal(y[1, 2], torch.tensor([10.0, 11.0, 21.0]))  # x[1, 2] = [10, 11]
    y.sum().backward()
    assert layer.weight.grad is None
    assert torch.equal(x.grad, torch.full((2, 3, 2), 2.0))


def test_autocast_and_other_dtypes_are_nn_linear_itself():
    layer = _layer([[1, 0], [0, 1], [1, 1]], [0.5, -1, 0])
    x = torch.tensor([[1.0, 2.0]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16  # autocast's bf16 product, as nn.Linear gives
    assert layer.to(torch.float64)(x.double()).dtype == torch.float64


def test_a_model_swaps_every_linear_and_trains_as_nn_linear_does(tiny_model):
    from tunefleet.tasks import get_task
    from tunefleet.train.models import build_model

    torch.manual_seed(0)
    original = build_model(get_task("token-classification"), tiny_model, ["O", "B-X", "I-X"], 0.0)
    model = copy.deepcopy(original)
    weights = [p for p in model.parameters()]
    swapped = use_onednn_linear(model, min_weights=0)  # the tiny model's layers are all small
    assert swapped == sum(type(m) is torch.nn.Linear for m in original.modules()) > 0
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert [p for p in model.parameters()] == weights  # the same parameter objects, nothing copied
    assert model.state_dict().keys() == original.state_dict().keys()

    ids = torch.randint(1000, 3000, (4, 9))
    attention = torch.ones(4, 9, dtype=torch.long)
    attention[2, 6:] = 0
    labels = torch.randint(0, 3, (4, 9))
    losses = []
    for m in (original, model):
        m.train().zero_grad()
        loss = m(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        losses.append(loss.item())
    # Rounding order differs from MKL's: equal to fp32 precision, not bit for bit.
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), b in zip(original.named_parameters(), model.parameters()):
        assert b.grad is not None and torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6), name
    with torch.inference_mode():
        assert torch.allclose(original.eval()(input_ids=ids).logits, model.eval()(input_ids=ids).logits, atol=1e-5)


def test_only_layers_big_enough_to_gain_swap():
    """At MiniLM's size a layer swaps (384 x 384 = 147,456 weights); a classification head (384 x 9)
    and a 128 x 128 layer, which oneDNN runs slower than MKL, stay nn.Linear."""
    assert 128 * 128 < MIN_WEIGHTS <= 384 * 384
    model = torch.nn.Sequential(torch.nn.Linear(384, 384), torch.nn.Linear(384, 9), torch.nn.Linear(128, 128))
    assert use_onednn_linear(model) == 1
    assert [type(m) for m in model] == [OneDNNLinear, torch.nn.Linear, torch.nn.Linear]


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory) -> str:
    """The tiny BERT with feed-forward layers of 32 x 4,096 = 2^17 weights: big enough to swap."""
    from transformers import BertConfig, BertModel

    from tunefleet.train.models import load_tokenizer

    folder = tmp_path_factory.mktemp("wide-bert")
    tokenizer = load_tokenizer("bundled-minilm")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=4096, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_the_loop_trains_through_onednn_as_it_does_through_nn_linear(wide_model, tmp_path, monkeypatch):
    """An fp32 run of the loop on a CPU, with gradient checkpointing (the forward runs again in the
    backward pass): the feed-forward products went through oneDNN, and the losses after an epoch
    are the same run's with `nn.Linear` to fp32 rounding."""
    from conftest import tiny_spec_dict
    from tunefleet.spec import spec_from_dict
    from tunefleet.train import onednn
    from tunefleet.train.local import train_local

    spec = spec_from_dict(tiny_spec_dict(wide_model, tmp_path / "runs", train={
        "epochs": 1, "precision": "fp32", "gradient_checkpointing": True, "dropout": 0.0}))
    calls = {"forward": 0, "input gradient": 0, "weight gradient": 0}
    weight_gradient_outputs: set[int] = set()  # the layers' output widths (grad.T's rows)
    real_product = onednn._product

    def product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # Told apart by what the backward pass transposes: the weight for the input gradient
        # (grad @ W = grad @ (W.T).T), the upstream gradient for the weight's (grad.T @ x).
        kind = ("weight gradient" if not x.is_contiguous() else
                "input gradient" if not weight.is_contiguous() else "forward")
        calls[kind] += 1
        if kind == "weight gradient":
            weight_gradient_outputs.add(x.shape[0])
        return real_product(x, weight, bias)

    monkeypatch.setattr(onednn, "_product", product)
    monkeypatch.setenv("TUNEFLEET_ONEDNN_LINEAR", "1")  # the swap on any CPU, AVX-512 or not
    with_onednn = train_local(spec, tmp_path / "onednn")["history"][-1]
    # 140 training examples in batches of 16: 9 steps, each through 2 layers x 2 feed-forward products;
    # the weight gradient of the narrowing one (4,096 -> 32) only: the widening one's goes by MKL.
    assert calls["input gradient"] == 9 * 2 * 2
    assert calls["weight gradient"] == 9 * 2 * 1
    assert weight_gradient_outputs == {32}  # the narrowing layer's, never the widening one's 4,096
    # Training forwards twice per layer and step (checkpointing recomputes), evaluation once per batch.
    assert calls["forward"] > 2 * calls["input gradient"]
    # Where oneDNN does not pay (TUNEFLEET_ONEDNN_LINEAR=0 stands in for an AVX2-only CPU) the loop
    # keeps nn.Linear: not one product more goes through oneDNN.
    monkeypatch.setenv("TUNEFLEET_ONEDNN_LINEAR", "0")
    before = dict(calls)
    with_mkl = train_local(spec, tmp_path / "mkl")["history"][-1]
    assert calls == before
    assert with_onednn["train_loss"] == pytest.approx(with_mkl["train_loss"], rel=1e-4)
    assert with_onednn["val_loss"] == pytest.approx(with_mkl["val_loss"], rel=1e-4)


@pytest.mark.parametrize(("capability", "setting", "swaps"), [
    ("AVX512", None, True),    # where oneDNN's products gained 7% a step (the AVX-512 EPYC, session 18)
    ("AVX2", None, False),     # where they gained nothing (the AVX2-only EPYC, session 29)
    ("DEFAULT", None, False),
    ("AVX2", "1", True),       # asked for
    ("AVX512", "0", False),    # refused
])
def test_the_loop_swaps_layers_only_where_onednn_pays(monkeypatch, capability, setting, swaps):
    """`pays_here()` follows torch's CPU capability unless TUNEFLEET_ONEDNN_LINEAR says otherwise
    (the loop's obedience: `test_the_loop_trains_through_onednn_as_it_does_through_nn_linear`)."""
    from tunefleet.train import onednn

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    if setting is None:
        monkeypatch.delenv("TUNEFLEET_ONEDNN_LINEAR", raising=False)
    else:
        monkeypatch.setenv("TUNEFLEET_ONEDNN_LINEAR", setting)
    assert onednn.pays_here() is swaps


def test_a_wrong_onednn_setting_names_the_variable_and_its_values(monkeypatch):
    from tunefleet.train.onednn import pays_here

    monkeypatch.setenv("TUNEFLEET_ONEDNN_LINEAR", "yes")
    with pytest.raises(ValueError, match=r"TUNEFLEET_ONEDNN_LINEAR='yes'.*1 .*0 "):
        pays_here()
