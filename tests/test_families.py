"""Every common encoder family, for NER and classification: BERT (WordPiece, cased and uncased),
DistilBERT (no segment ids), ELECTRA, RoBERTa (byte-level BPE), DeBERTa-v2/v3 (one model class; the
tiny model has v3's shape) and XLM-R (SentencePiece Unigram with the "▁" metaspace).

Nothing is downloaded. A module-scoped fixture builds each family in a temporary folder: a tokenizer of
the family's kind, trained here with the `tokenizers` library on the synthetic data's sentences and
wrapped in the family's own tokenizer class (so `AutoTokenizer.from_pretrained(folder)` gives that class
back, with its normalizer, pre-tokenizer and special-token template), beside a tiny random model of the
family (2 layers, 32 wide) saved with `save_pretrained` (safetensors), as a hub folder would hold them.

Cheap checks, no Ray, for every family: the tokenizer loads back as its class; NER labels sit on the
first piece of each word only, against hand-checked splits of words the tokenizer cuts into several
pieces; the words of a sentence tokenize exactly as the text they came from (what training sees is
what serving sees); an NER answer gives one tag per word with the word's character span; `train.dropout`
reaches every dropout module; a head for other labels starts afresh; a sentence pair runs through the
model. A byte-level tokenizer saved as the generic class gets the same prefix space as RoBERTa's.

End to end, per family and task, on tiny data: read -> tokenize -> train (the loop without Ray,
`train.local`, as the task contract test does) -> the validation loss falls below the untrained
model's -> register in a SQLite MLflow registry -> predict from the registry -> the same answers from
Ray Serve. Serving starts one replica for the whole module: it follows `families@champion`, and each
test promotes its version and waits for the replica to swap it in (a replica start costs ~10 s on 2
cores; fourteen of them would double the file's time).
"""

from __future__ import annotations

import json
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from conftest import tiny_spec_dict
from contracts.test_tasks import _check_answers, _same, _untrained, serve_url  # noqa: F401 - serve_url is a fixture
from tunefleet.data import Examples
from tunefleet.tasks import IGNORE, get_task

pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")

NER, CLASSIFICATION = "token-classification", "text-classification"
X = IGNORE

# ---- the families ---------------------------------------------------------------------------------

# The NER alignment sentence: a two-word person, a verb and a possessive whose apostrophe some
# pre-tokenizers split off. Every tokenizer here cuts every one of these words into several pieces.
WORDS = ["Anna", "Nowak", "visited", "Washington's"]
TAGS = ["B-PER", "I-PER", "O", "B-LOC"]
LABELS = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
O, B_LOC, I_LOC, B_PER, I_PER = range(len(LABELS))

# How each family's tokenizer (trained below, deterministic) cuts WORDS; the expectations of the
# alignment tests rest on these, and `test_the_hand_checked_splits_hold` fails first if they change.
_UNCASED = [["a", "##n", "##n", "##a"], ["no", "##w", "##ak"], ["v", "##is", "##ited"], ["washington", "'", "s"]]
_UNIGRAM = [["▁A", "n", "n", "a"], ["▁N", "o", "w", "a", "k"], ["▁v", "is", "ite", "d"],
            ["▁W", "as", "hing", "t", "on", "'", "s"]]
PIECES = {
    "bert-cased": [["A", "##n", "##n", "##a"], ["No", "##w", "##ak"], ["v", "##is", "##i", "##ted"],
                   ["Washington", "'", "s"]],
    "bert-uncased": _UNCASED, "distilbert": _UNCASED, "electra": _UNCASED,
    # "Ġ" marks a word start: every word has it, the first one too (models.load_tokenizer adds the
    # prefix space); "Nowak" starts with a bare "Ġ", which this small vocabulary never merged with "N".
    "roberta": [["ĠA", "n", "n", "a"], ["Ġ", "No", "w", "ak"], ["Ġv", "is", "i", "ted"],
                ["ĠW", "ashing", "ton", "'", "s"]],
    "deberta-v3": _UNIGRAM, "xlm-roberta": _UNIGRAM,
}

SPECIALS = {  # (first, last) special tokens of a single sequence
    "wordpiece": ("[CLS]", "[SEP]"), "byte-bpe": ("<s>", "</s>"), "xlm-r": ("<s>", "</s>"),
    "deberta": ("[CLS]", "[SEP]"),
}


def _corpus() -> list[str]:
    """What the tokenizers learn from: the synthetic sentences the end-to-end tests train on, plus
    every ASCII letter, digit and punctuation mark (alone and inside a word), so no character is
    unknown and every letter has a word-continuation piece."""
    from tunefleet.data.synthetic import news, reviews

    lines = [" ".join(words) for split in news(300, 7) for words in split.tokens]
    lines += [text for split in reviews(300, 7) for text in split.texts]
    alphabet = string.ascii_letters + string.digits + string.punctuation
    return lines + [" ".join(alphabet), string.ascii_letters]


def _wordpiece(lowercase: bool, size: int = 400) -> dict[str, int]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(_corpus(), trainers.WordPieceTrainer(
        vocab_size=size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    return tokenizer.get_vocab()


def _byte_level_bpe(size: int = 500) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    # RoBERTa's order of special tokens: <s> 0, <pad> 1 (the config's pad_token_id), </s> 2, <unk> 3.
    tokenizer.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=size, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _unigram(specials: list[str], unk: str, size: int = 600) -> list[tuple[str, float]]:
    """A SentencePiece-style Unigram vocabulary over "▁"-prefixed words: pieces with log-probabilities."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.train_from_iterator(_corpus(), trainers.UnigramTrainer(
        vocab_size=size, special_tokens=specials, unk_token=unk))
    return [tuple(piece) for piece in json.loads(tokenizer.to_str())["model"]["vocab"]]


@dataclass(frozen=True)
class Family:
    tokenizer_class: str  # what AutoTokenizer loads back
    kind: str  # a key of SPECIALS
    make_tokenizer: Callable[[], Any]
    make_model: Callable[[Any], Any]  # tokenizer -> a random base model


def _tiny(**extra: Any) -> dict[str, Any]:
    return {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
            "max_position_embeddings": 128, **extra}


def _bert(tokenizer: Any) -> Any:
    from transformers import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **_tiny()))


def _distilbert(tokenizer: Any) -> Any:
    from transformers import DistilBertConfig, DistilBertModel

    return DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                            max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id))


def _electra(tokenizer: Any) -> Any:
    from transformers import ElectraConfig, ElectraModel

    return ElectraModel(ElectraConfig(vocab_size=len(tokenizer), embedding_size=32, pad_token_id=tokenizer.pad_token_id,
                                      **_tiny()))


def _roberta(tokenizer: Any) -> Any:
    from transformers import RobertaConfig, RobertaModel

    # One segment type, as roberta-base: segment ids of 1 would index past the embedding table.
    return RobertaModel(RobertaConfig(vocab_size=len(tokenizer), type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                      **_tiny()))


def _xlm_roberta(tokenizer: Any) -> Any:
    from transformers import XLMRobertaConfig, XLMRobertaModel

    return XLMRobertaModel(XLMRobertaConfig(vocab_size=len(tokenizer), type_vocab_size=1,
                                            pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                            eos_token_id=tokenizer.eos_token_id, **_tiny()))


def _deberta_v3(tokenizer: Any) -> Any:
    from transformers import DebertaV2Config, DebertaV2Model

    # deberta-v3-base's shape: relative attention with log buckets, no absolute positions, no segments.
    return DebertaV2Model(DebertaV2Config(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, relative_attention=True,
        position_buckets=32, max_relative_positions=-1, pos_att_type=["p2c", "c2p"], position_biased_input=False,
        type_vocab_size=0, norm_rel_ebd="layer_norm", share_att_key=True, **_tiny()))


def _bert_tokenizer(class_name: str, lowercase: bool) -> Callable[[], Any]:
    def make() -> Any:
        import transformers

        return getattr(transformers, class_name)(vocab=_wordpiece(lowercase), do_lower_case=lowercase)
    return make


def _roberta_tokenizer() -> Any:
    from transformers import RobertaTokenizer

    vocab, merges = _byte_level_bpe()
    return RobertaTokenizer(vocab=vocab, merges=merges)


def _xlm_roberta_tokenizer() -> Any:
    from transformers import XLMRobertaTokenizer

    # XLM-R's order: <s> 0, <pad> 1, </s> 2, <unk> 3.
    return XLMRobertaTokenizer(vocab=_unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<unk>"))


def _deberta_tokenizer() -> Any:
    from transformers import DebertaV2Tokenizer

    # deberta-v3's order: [PAD] 0, [CLS] 1, [SEP] 2, [UNK] 3.
    return DebertaV2Tokenizer(vocab=_unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[UNK]"))


FAMILIES = {
    "bert-cased": Family("BertTokenizer", "wordpiece", _bert_tokenizer("BertTokenizer", False), _bert),
    "bert-uncased": Family("BertTokenizer", "wordpiece", _bert_tokenizer("BertTokenizer", True), _bert),
    "distilbert": Family("DistilBertTokenizer", "wordpiece", _bert_tokenizer("DistilBertTokenizer", True), _distilbert),
    "electra": Family("BertTokenizer", "wordpiece", _bert_tokenizer("ElectraTokenizer", True), _electra),
    "roberta": Family("RobertaTokenizer", "byte-bpe", _roberta_tokenizer, _roberta),
    "deberta-v3": Family("DebertaV2Tokenizer", "deberta", _deberta_tokenizer, _deberta_v3),
    "xlm-roberta": Family("XLMRobertaTokenizer", "xlm-r", _xlm_roberta_tokenizer, _xlm_roberta),
}


@dataclass(frozen=True)
class Built:
    name: str
    family: Family
    folder: str

    def tokenizer(self) -> Any:
        from tunefleet.train.models import load_tokenizer

        return load_tokenizer(self.folder)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory) -> Built:
    """One family's tokenizer and tiny random model in a folder, as `model.name_or_path` takes it."""
    import torch

    spec = FAMILIES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    tokenizer = spec.make_tokenizer()
    torch.manual_seed(0)
    spec.make_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Built(request.param, spec, str(folder))


# ---- cheap checks, every family ------------------------------------------------------------------

def test_the_tokenizer_loads_back_as_its_family_class(family):
    tokenizer = family.tokenizer()
    assert type(tokenizer).__name__ == family.family.tokenizer_class
    assert tokenizer.is_fast


def test_the_hand_checked_splits_hold(family):
    """Every word of WORDS is cut into several pieces; the alignment expectations rest on PIECES."""
    tokenizer = family.tokenizer()
    pieces = [tokenizer.convert_ids_to_tokens(tokenizer([word], is_split_into_words=True,
                                                        add_special_tokens=False)["input_ids"])
              for word in WORDS]
    assert pieces == PIECES[family.name]
    assert all(len(word) > 1 for word in pieces)
    first, last = SPECIALS[family.family.kind]
    sentence = tokenizer(WORDS, is_split_into_words=True)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(sentence) == [first, *(p for word in pieces for p in word), last]


def test_only_the_first_piece_of_each_word_carries_its_tag(family):
    from tunefleet.tasks.ner import TokenClassification

    split = TokenClassification().tokenize(Examples(texts=None, tokens=[WORDS], labels=[TAGS]), family.tokenizer(),
                                           LABELS, 64)
    # Worked from PIECES: the special token first, then per word its tag and an X per later piece.
    expected = {
        #              Anna            Nowak              visited           Washington's
        "bert-cased": [X, B_PER, X, X, X, I_PER, X, X, O, X, X, X, B_LOC, X, X, X],
        "bert-uncased": [X, B_PER, X, X, X, I_PER, X, X, O, X, X, B_LOC, X, X, X],
        "roberta": [X, B_PER, X, X, X, I_PER, X, X, X, O, X, X, X, B_LOC, X, X, X, X, X],
        "deberta-v3": [X, B_PER, X, X, X, I_PER, X, X, X, X, O, X, X, X, B_LOC, X, X, X, X, X, X, X],
    }
    expected["distilbert"] = expected["electra"] = expected["bert-uncased"]
    expected["xlm-roberta"] = expected["deberta-v3"]
    assert split.labels.tolist() == expected[family.name]
    assert split.gold.tolist() == [B_PER, I_PER, O, B_LOC]  # one gold tag per word, whatever the pieces


def test_words_tokenize_as_the_text_they_came_from(family, tmp_path):
    """NER trains on words (`is_split_into_words`) and answers raw text: both must give the same
    pieces, or the model learns pieces that serving never shows it. Also after the tokenizer has been
    saved with a checkpoint and loaded back as `Predictor` loads it."""
    from transformers import AutoTokenizer

    from tunefleet.data.synthetic import news

    sentences = [WORDS, *news(20, 3)[0].tokens]
    tokenizer = family.tokenizer()
    tokenizer.save_pretrained(tmp_path)
    for loaded in (tokenizer, AutoTokenizer.from_pretrained(tmp_path, use_fast=True)):
        for words in sentences:
            as_words = loaded(words, is_split_into_words=True)["input_ids"]
            as_text = loaded(" ".join(words))["input_ids"]
            assert loaded.convert_ids_to_tokens(as_words) == loaded.convert_ids_to_tokens(as_text), words


def test_an_ner_answer_gives_one_tag_per_word_with_its_span(family):
    """Logits that say B-LOC on each word's first piece and B-PER everywhere else (later pieces and
    special tokens): the answer must hold one LOC entity per word, spanning exactly that word."""
    task = get_task(NER)
    tokenizer = family.tokenizer()
    words = WORDS[:3]  # words without punctuation: the text splits into the same words
    text = " ".join(words)
    encoded = task.encode(tokenizer, [{"text": text}], 64)
    logits = np.zeros((1, encoded["input_ids"].shape[1], len(LABELS)), dtype=np.float32)
    logits[0, :, B_PER] = 5.0
    first = 1  # after the leading special token
    for pieces in PIECES[family.name][:3]:
        logits[0, first] = 0.0
        logits[0, first, B_LOC] = 5.0
        first += len(pieces)
    [answer] = task.answers(logits, encoded, [{"text": text}], LABELS)
    spans = [(e["type"], e["start"], e["end"], e["text"]) for e in answer["entities"]]
    assert spans == [("LOC", 0, 4, "Anna"), ("LOC", 5, 10, "Nowak"), ("LOC", 11, 18, "visited")]


@pytest.mark.parametrize("task_name", [NER, CLASSIFICATION])
def test_dropout_reaches_every_dropout_module(family, task_name):
    import torch

    from tunefleet.train.models import build_model

    labels = LABELS if task_name == NER else ["negative", "positive"]
    model = build_model(get_task(task_name), family.folder, labels, 0.25)
    rates = {name: module.p for name, module in model.named_modules() if isinstance(module, torch.nn.Dropout)}
    assert rates and set(rates.values()) == {0.25}, rates
    # Attention dropout is a rate the attention function reads from the config, not a module.
    config = model.config
    assert getattr(config, "attention_probs_dropout_prob", getattr(config, "attention_dropout", None)) == 0.25


def _batch_and_two_copies(family, dropout: float) -> tuple[dict, Any, Any]:
    """An NER batch of two sentences in the family's tokenizer; the family's model (seeded) and a
    deep copy of it, for a CPU speed-up to change and the original to compare with."""
    import copy

    import torch

    from tunefleet.train.batching import collate
    from tunefleet.train.models import build_model

    task = get_task(NER)
    split = task.tokenize(Examples(None, [WORDS, WORDS[:2]], [TAGS, TAGS[:2]]), family.tokenizer(), LABELS, 64)
    batch = collate(split, np.arange(2), family.tokenizer().pad_token_id, task.per_token_labels)
    torch.manual_seed(0)
    original = build_model(task, family.folder, LABELS, dropout)
    return batch, original, copy.deepcopy(original)


def test_the_cheaper_cpu_dropout_trains_every_family_and_evaluates_as_before(family):
    """`use_fast_dropout` (what the loop does on a CPU) swaps every dropout module, routes the
    attention through `tunefleet_sdpa` where the family's attention goes through transformers'
    interface, leaves evaluation bit for bit as it was, and still drops in training."""
    import torch

    from tunefleet.train.dropout import use_fast_dropout

    batch, original, model = _batch_and_two_copies(family, 0.3)
    assert use_fast_dropout(model) > 0
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    if original.config._attn_implementation == "sdpa" and original._can_set_attn_implementation():
        assert model.config._attn_implementation == "tunefleet_sdpa"
    with torch.no_grad():
        before = original.eval()(**batch).logits
        after = model.eval()(**batch).logits
        assert torch.equal(before, after)
        torch.manual_seed(1)
        trained = model.train()(**batch)
    assert torch.isfinite(trained.loss) and not torch.allclose(trained.logits, after)


def test_onednn_linear_layers_train_every_family_as_nn_linear_does(family):
    """`use_onednn_linear` (what the loop does on a CPU) swaps every plain linear layer of the
    family, and a training step gives nn.Linear's loss and gradients to fp32 rounding."""
    import torch

    from tunefleet.train.onednn import available, use_onednn_linear

    if not available():
        pytest.skip("this torch has no usable oneDNN linear op")
    batch, original, model = _batch_and_two_copies(family, 0.0)
    assert use_onednn_linear(model, min_weights=0) == sum(type(m) is torch.nn.Linear for m in original.modules()) > 0
    losses = []
    for m in (original, model):
        loss = m.train()(**batch).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), b in zip(original.named_parameters(), model.parameters()):
        if a.grad is not None:  # DeBERTa's relative-position parts may get none
            assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6), name


def test_a_packed_training_step_gives_every_family_that_takes_packing_the_padded_step_s_loss_and_gradients(family):
    """Three sentences (4, 2 and 1 words) packed into shared rows train a family's model as the same
    three padded do: same loss, same gradients (fp32 rounding; no dropout). DeBERTa-v3 is refused by
    the loop's check: its relative positions and mask are built over the whole row (and a 4-D mask
    does not go through), so it trains on padded batches; every other family takes packing."""
    import copy

    import torch

    from tunefleet.train.batching import collate
    from tunefleet.train.models import build_model
    from tunefleet.train.packing import pack, packing_check, position_offset

    task = get_task(NER)
    tokenizer = family.tokenizer()
    split = task.tokenize(Examples(None, [WORDS, WORDS[:2], WORDS[:1]], [TAGS, TAGS[:2], TAGS[:1]]), tokenizer,
                          LABELS, 64)
    torch.manual_seed(0)
    padded_model = build_model(task, family.folder, LABELS, 0.0)
    refused = packing_check(padded_model, split, tokenizer.pad_token_id)
    assert (refused is not None) == (family.name == "deberta-v3"), refused
    if refused:
        return
    packed_model = copy.deepcopy(padded_model)
    packed = pack(split, np.arange(3), tokenizer.pad_token_id, position_offset(packed_model))
    assert len(packed["input_ids"]) < 3  # the two short sentences share a row
    losses = []
    for model, batch in ((padded_model, collate(split, np.arange(3), tokenizer.pad_token_id, True)),
                         (packed_model, packed)):
        loss = model.train()(**batch).loss
        loss.backward()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for (name, a), b in zip(padded_model.named_parameters(), packed_model.parameters()):
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-3, atol=1e-6), name


def test_a_head_for_other_labels_starts_afresh(family, tmp_path):
    """A model fine-tuned for other labels gets a new head, whatever the family calls its parts
    (`classifier`; DistilBERT's `pre_classifier`; RoBERTa's and ELECTRA's `classifier.dense` and
    `classifier.out_proj`; DeBERTa's `pooler`, which its base model lacks), and keeps its encoder
    (BERT's pooler included: it is pretrained)."""
    import torch

    from tunefleet.train.models import build_model

    task = get_task(CLASSIFICATION)
    old = build_model(task, family.folder, ["x", "y"], None)
    old.save_pretrained(tmp_path)
    new = build_model(task, str(tmp_path), ["negative", "positive"], None)
    before, after = old.state_dict(), new.state_dict()
    head = [name for name in before if not name.startswith(f"{old.base_model_prefix}.")]
    weights = [name for name in head if not name.endswith(".bias")]  # biases start at zero either way
    assert weights and not any(torch.equal(before[name], after[name]) for name in weights), weights
    assert all(torch.equal(before[name], after[name]) for name in before if name not in head)


PAIR_SPECIALS = {"wordpiece": ["[CLS]", "[SEP]", "[SEP]"], "deberta": ["[CLS]", "[SEP]", "[SEP]"],
                 "byte-bpe": ["<s>", "</s>", "</s>", "</s>"], "xlm-r": ["<s>", "</s>", "</s>", "</s>"]}


def test_a_sentence_pair_runs_through_the_model(family):
    """Pairs use the family's template (`[CLS] a [SEP] b [SEP]`, `<s> a </s></s> b </s>`) and segment
    ids only where the tokenizer makes them: a RoBERTa or XLM-R model has one segment type, and a
    segment id of 1 would index past its embedding table."""
    import torch

    from tunefleet.train.batching import collate
    from tunefleet.train.models import build_model

    task = get_task("text-pair-classification")
    tokenizer = family.tokenizer()
    examples = Examples(texts=["Anna Nowak visited Oslo .", "the kettle is quiet ."], tokens=None,
                        text_pairs=["Nowak went to Oslo .", "the kettle is noisy ."], labels=["1", "0"])
    split = task.tokenize(examples, tokenizer, ["0", "1"], 64)
    pieces = tokenizer.convert_ids_to_tokens(split.ids[:split.offsets[1]].tolist())
    assert [piece for piece in pieces if piece in tokenizer.all_special_tokens] == PAIR_SPECIALS[family.family.kind]
    assert (split.type_ids is not None) == ("token_type_ids" in tokenizer.model_input_names)
    batch = collate(split, np.arange(2), tokenizer.pad_token_id, task.per_token_labels)
    model = build_model(task, family.folder, ["0", "1"], 0.0).eval()
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_a_generic_byte_level_tokenizer_gets_its_prefix_space_too(tmp_path):
    """Some byte-level BPE models ship their tokenizer as the generic class (ModernBERT's
    `PreTrainedTokenizerFast`, saved as `TokenizersBackend`), which takes tokenizer.json's pipeline as
    it is and ignores `add_prefix_space`: load_tokenizer sets it in the pipeline, and a checkpoint's
    copy keeps it."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from tunefleet.train.models import load_tokenizer

    specials = {"bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>",
                "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}
    generic = PreTrainedTokenizerFast(tokenizer_object=_roberta_tokenizer().backend_tokenizer, **specials)
    generic.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    loaded = load_tokenizer(str(tmp_path / "model"))
    assert type(loaded).__name__ == "TokenizersBackend"
    loaded.save_pretrained(tmp_path / "checkpoint")
    for tokenizer in (loaded, AutoTokenizer.from_pretrained(tmp_path / "checkpoint", use_fast=True)):
        as_words = tokenizer(WORDS, is_split_into_words=True)["input_ids"]
        assert as_words == tokenizer(" ".join(WORDS))["input_ids"]
        assert tokenizer.convert_ids_to_tokens(as_words)[1:5] == PIECES["roberta"][0]


# ---- end to end: train -> register -> predict -> serve, every family and task ----------------------

MODEL = "families"  # one registered model: each test's version becomes its champion in turn
# Tiny data, few steps. Measured on every family: NER's validation loss falls from ~1.95 to ~1.0 in
# 21 steps of the synthetic news; on the synthetic reviews the random 32-wide models learn nothing in
# under a few hundred steps (tests/contracts/test_tasks.py), so classification gets two-word reviews
# labelled by their adjective, which every family learns in its 96 steps (validation loss 0.69 -> under
# 0.1, accuracy 0.5 -> 1).
TRAIN = {"epochs": 3, "batch_size": 8, "lr": 3.0e-3, "dropout": 0.0, "warmup_ratio": 0.0, "metric": "loss"}
GOOD = ("great", "sturdy", "reliable", "quiet", "lovely", "solid")
BAD = ("flimsy", "noisy", "broken", "awful", "fragile", "cheap")
PRODUCTS = ("kettle", "laptop", "tent", "backpack", "keyboard", "blender")


def _adjective_reviews(path: Path, size: int = 320) -> dict[str, Any]:
    """A jsonl file of balanced two-word reviews ("sturdy kettle": positive); its `data` section."""
    import random

    rng = random.Random(0)
    with path.open("w") as out:
        for i in range(size):
            positive = i % 2 == 0
            text = f"{rng.choice(GOOD if positive else BAD)} {rng.choice(PRODUCTS)}"
            out.write(json.dumps({"text": text, "label": "positive" if positive else "negative"}) + "\n")
    return {"format": "jsonl", "train": str(path)}
# An NER request with words every tokenizer cuts into several pieces, and a possessive.
NER_INPUTS = [{"text": "Anna Nowak visited Washington's office in Lyon ."}, *get_task(NER).example_inputs]


class _Follower:
    """One Serve app for the module, following `MODEL@champion`; started on first use (the alias
    must point somewhere before a replica can load it)."""

    def __init__(self, url: str, uri: str):
        self.url, self.uri, self.started = url, uri, False

    def predict(self, version: int, inputs: list[Any]) -> list[dict[str, Any]]:
        import requests
        from ray import serve

        from tunefleet.serve.app import ServeOptions, build_app

        if not self.started:
            serve.run(build_app(ServeOptions(model=MODEL, tracking_uri=self.uri, num_cpus=0.25, batching=False,
                                             poll_interval_s=0.2)), name="families", route_prefix="/families")
            self.started = True
        deadline = time.monotonic() + 60
        while requests.get(f"{self.url}/families/healthz", timeout=10).json()["model"]["version"] != version:
            assert time.monotonic() < deadline, f"the replica did not load version {version} within 60 s"
            time.sleep(0.1)
        response = requests.post(f"{self.url}/families/predict", json={"texts": inputs}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["model"]["version"] == version
        return response.json()["predictions"]


@pytest.fixture(scope="module")
def follower(serve_url, tmp_path_factory):
    from ray import serve

    uri = f"sqlite:///{tmp_path_factory.mktemp('families-registry') / 'mlflow.db'}"
    served = _Follower(serve_url, uri)
    yield served
    if served.started:
        serve.delete("families")


@pytest.mark.slow
@pytest.mark.parametrize("task_name", [NER, CLASSIFICATION])
def test_trains_registers_predicts_and_serves(family, task_name, follower, tmp_path):
    from tunefleet.spec import spec_from_dict
    from tunefleet.tracking.registry import promote, register_checkpoint, resolve_model
    from tunefleet.train.launch import prepare_data
    from tunefleet.train.local import train_local
    from tunefleet.train.predict import Predictor

    task = get_task(task_name)
    data = ({"format": "synthetic", "synthetic_size": 80} if task_name == NER
            else _adjective_reviews(tmp_path / "reviews.jsonl"))
    spec = spec_from_dict(tiny_spec_dict(family.folder, tmp_path / "runs", name=f"{family.name}-{task_name}",
                                         task=task_name, data=data, model={"max_length": 64}, train=TRAIN))

    # read, tokenize, train: the validation loss falls below the untrained model's
    prepared = prepare_data(spec)
    before = _untrained(spec, prepared)
    summary = train_local(spec, tmp_path / "trained", prepared=prepared)
    after = summary["metrics"]["validation"]
    assert after["loss"] < before["loss"], (before["loss"], after["loss"])
    if task_name == CLASSIFICATION:
        assert after["accuracy"] > before["accuracy"], (before["accuracy"], after["accuracy"])

    # register, make it the champion the Serve app follows, predict from the registry
    registered = register_checkpoint(summary["checkpoint"], MODEL, summary["metrics"]["test"],
                                     tracking_uri=follower.uri)
    version = registered["version"]
    promote(MODEL, version, force=True, tracking_uri=follower.uri)
    resolved = resolve_model(f"{MODEL}/{version}", tracking_uri=follower.uri)
    inputs = NER_INPUTS if task_name == NER else task.example_inputs
    local = Predictor(resolved.checkpoint).predict(inputs)
    _check_answers(task, local, len(inputs))
    if task_name == NER:
        for item, answer in zip(inputs, local):
            for entity in answer["entities"]:  # spans lie on words, without the spaces around them
                text = item["text"]
                assert text[entity["start"]:entity["end"]] == entity["text"] == entity["text"].strip()
                assert entity["start"] == 0 or text[entity["start"] - 1] == " "

    # the same answers from Ray Serve
    assert _same(follower.predict(version, inputs), local)
