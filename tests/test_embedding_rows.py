"""train/embedding_rows.py: AdamW that updates the word embedding's rows only once a batch has used
them gives dense AdamW's weights, its rows no batch used decayed by hand-worked factors, across an
evaluation and a checkpoint; and the gradient norm counts a sparse gradient's rows as dense."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, BertForTokenClassification

from tunefleet.train.embedding_rows import RowwiseAdamW, rowwise_embedding
from tunefleet.train.loop import _param_groups, clip_in_step


class Bag(nn.Module):
    """A word embedding whose loss is the sum of the looked-up rows: every used row's gradient is 1s."""

    def __init__(self) -> None:
        super().__init__()
        self.words = nn.Embedding(6, 2)
        with torch.no_grad():
            self.words.weight.copy_(torch.arange(1.0, 13.0).view(6, 2))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.words

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.words(ids).sum()


def test_a_row_no_batch_used_is_only_decayed_and_untouched_until_read():
    bag = Bag()
    optimizer = RowwiseAdamW([{"params": [bag.words.weight], "weight_decay": 0.5}], bag.words, lr=0.1)
    for _ in range(3):
        bag(torch.tensor([1, 2, 2])).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    # Row 4 (9, 10 at the start): dense AdamW multiplies it by 1 - 0.1 x 0.5 = 0.95 each step, as
    # its gradient and moments are zero. Here it is not written until something reads the table.
    assert bag.words.weight[4].tolist() == [9.0, 10.0]
    weights = bag.state_dict()["words.weight"]  # reading the table brings it up to date
    assert weights[4].tolist() == pytest.approx([9 * 0.857375, 10 * 0.857375], rel=1e-6)  # 0.95 ** 3
    # Row 1's gradient is 1 every step: Adam's bias-corrected update is then exactly lr, after the
    # decay: ((3 x 0.95 - 0.1) x 0.95 - 0.1) x 0.95 - 0.1 = 2.297... for its first element.
    expected = 3.0
    for _ in range(3):
        expected = expected * 0.95 - 0.1
    assert weights[1, 0].item() == pytest.approx(expected, rel=1e-5)
    assert optimizer.state[bag.words.weight]["active"] == 2  # rows 1 and 2 only


def _tiny_token_model() -> BertForTokenClassification:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                        max_position_embeddings=16, num_labels=3, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertForTokenClassification(config).double()


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    # ids 1-19 only: rows 20-49 stay unused and must come out decayed, no more.
    return [(torch.randint(1, 20, (2, 6), generator=generator), torch.randint(0, 3, (2, 6), generator=generator))
            for _ in range(6)]


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, batches: list, first_step: int = 0) -> None:
    model.train()
    for step, (ids, labels) in enumerate(batches, start=first_step):
        for group in optimizer.param_groups:  # a schedule, as the loop's scheduler sets it
            group["lr"] = 0.02 / (step + 1)
        model(input_ids=ids, labels=labels).loss.backward()
        clip_in_step(optimizer, model.parameters(), 0.05)  # small: the clipping factor matters
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_rowwise_training_gives_dense_fused_adamw_weights_and_evaluations():
    dense_model = _tiny_token_model()
    rowwise_model = copy.deepcopy(dense_model)
    start = dense_model.bert.embeddings.word_embeddings.weight.detach().clone()
    dense = torch.optim.AdamW(_param_groups(dense_model, 0.3), lr=0.01, fused=True)
    rowwise = RowwiseAdamW(_param_groups(rowwise_model, 0.3), rowwise_embedding(rowwise_model), lr=0.01)
    batches, probe = _batches(), torch.arange(0, 50).view(5, 10)
    _train(dense_model, dense, batches[:3])
    _train(rowwise_model, rowwise, batches[:3])
    for model in (dense_model, rowwise_model):
        model.eval()
    with torch.inference_mode():  # an evaluation mid-run reads every row, used or not
        assert torch.allclose(rowwise_model(input_ids=probe).logits, dense_model(input_ids=probe).logits,
                              rtol=0, atol=1e-12)
    _train(dense_model, dense, batches[3:], 3)
    _train(rowwise_model, rowwise, batches[3:], 3)
    dense_weights, rowwise_weights = dense_model.state_dict(), rowwise_model.state_dict()
    for name, weight in dense_weights.items():
        assert torch.allclose(rowwise_weights[name], weight, rtol=0, atol=1e-12), name
    # The rows no batch used: six steps of decay, 1 - lr x 0.3 at lr = 0.02 / step, nothing else.
    unused = rowwise_weights["bert.embeddings.word_embeddings.weight"][20:]
    decay = 1.0
    for step in range(1, 7):
        decay *= 1 - 0.02 / step * 0.3
    assert torch.allclose(unused, start[20:] * decay, rtol=1e-12, atol=0)


def test_a_resumed_run_continues_as_one_that_never_stopped():
    through = _tiny_token_model()
    resumed = copy.deepcopy(through)
    batches = _batches()
    optimizer = RowwiseAdamW(_param_groups(through, 0.3), rowwise_embedding(through), lr=0.01)
    _train(through, optimizer, batches[:3])
    saved = io.BytesIO()
    torch.save({"model": through.state_dict(), "optimizer": optimizer.state_dict()}, saved)
    _train(through, optimizer, batches[3:], 3)

    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    resumed.load_state_dict(state["model"])
    optimizer = RowwiseAdamW(_param_groups(resumed, 0.3), rowwise_embedding(resumed), lr=0.01)
    optimizer.load_state_dict(state["optimizer"])
    _train(resumed, optimizer, batches[3:], 3)
    for name, weight in through.state_dict().items():
        assert torch.allclose(resumed.state_dict()[name], weight, rtol=0, atol=1e-12), name


def test_the_gradient_norm_counts_a_sparse_gradient_row_once_with_its_repeats_summed():
    weight = nn.Parameter(torch.zeros(5, 2))
    # Row 1 looked up twice (3, 0) + (1, 0) = (4, 0), row 3 once (0, 3): the dense gradient's norm is
    # sqrt(16 + 9) = 5; its entries as stored, unsummed, would give sqrt(9 + 1 + 9) = 4.36.
    weight.grad = torch.sparse_coo_tensor([[1, 1, 3]], [[3.0, 0.0], [1.0, 0.0], [0.0, 3.0]], (5, 2), check_invariants=True)
    optimizer = torch.optim.SGD([weight], lr=0.1)
    assert clip_in_step(optimizer, [weight], 2.0).item() == pytest.approx(5.0)
    assert optimizer.grad_scale.item() == pytest.approx((5.0 + 1e-6) / 2.0)


def test_only_an_embedding_that_trains_and_is_not_shared_is_trained_by_rows():
    config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    tagger = BertForTokenClassification(config)
    assert rowwise_embedding(tagger) is tagger.bert.embeddings.word_embeddings
    # A masked-LM head reads the same table as its output layer: a dense gradient would mix in.
    assert rowwise_embedding(BertForMaskedLM(config)) is None
    tagger.bert.embeddings.word_embeddings.weight.requires_grad_(False)  # frozen, as under LoRA
    assert rowwise_embedding(tagger) is None
