"""LoRA (`train.peft`): train low-rank updates of the encoder's attention projections and the whole task
head, with every pretrained weight frozen. Built on the `peft` library, imported only by runs that ask
for it.

What is adapted: `train.peft.target_modules` names Linear layers of the encoder by the last part(s) of
their module name (`query`, `attention.output.dense`); left out, the model type's default below (the
query and value projections, as in the LoRA paper), else peft's own default for the type. A name that
matches no Linear layer of the encoder, or a model type with no default, is a `SpecError` naming
`train.peft.target_modules` and the layer names there are; the driver checks it before any Ray work
(`check_lora`). Only layers inside the encoder are adapted. The task head (every module the task's
model class adds beside the encoder: `classifier`, DistilBERT's `pre_classifier`, DeBERTa's `pooler`)
is trained whole through peft's `modules_to_save`, so a head layer that shares a name with encoder
layers (RoBERTa's `classifier.dense`) is never adapted. An encoder's own pooler (BERT's) stays frozen.

Checkpoints hold two things (the loop writes them, `checkpoint.save_checkpoint` lays them out):
- the merged model (LoRA folded into the weights, `merge_and_unload` on a copy): a plain transformers
  model, so scoring, `predict`, the registry's pyfunc and Serve load it exactly as a fully fine-tuned
  one, and the registered model has no peft keys and needs no peft;
- the adapter (LoRA weights and the trained head, peft's `save_pretrained` layout) in `adapter/`, only
  for resuming. A resumed run rebuilds the base model from `model.name_or_path`, wraps it exactly as a
  fresh run does and loads the adapter: the frozen weights are the pretrained ones bit for bit (merged
  weights could not be un-merged exactly), and the saved AdamW state lines up with the same
  parameters in the same order. The registry leaves `adapter/` out of what it registers.
"""

from __future__ import annotations

import copy
import sys
import warnings
from pathlib import Path
from typing import Any

from ..spec import Spec, SpecError
from .checkpoint import ADAPTER_DIR
from .models import head_module_names, resolve_model_path

# Where LoRA goes by default: the attention's query and value projections, by `config.model_type`.
# Types not listed fall back to peft's own table (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING).
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),  # BERT, and MiniLM (the bundled model is a BERT)
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "camembert": ("query", "value"),
    "electra": ("query", "value"),
    "distilbert": ("q_lin", "v_lin"),
    "deberta-v2": ("query_proj", "value_proj"),
    "mpnet": ("q", "v"),
}


def apply_lora(model: Any, spec: Spec, resume_from: str | None = None) -> Any:
    """`model` (a transformers model with its task head) wrapped for LoRA training: the adapters and
    the head trainable, everything else frozen.

    Args:
        model: the model `build_model` made from `spec.model.name_or_path`.
        spec: the validated spec; `spec.train.peft` must be set.
        resume_from: a checkpoint folder whose adapter (LoRA weights and head) to continue from.

    Returns:
        A `peft.PeftModel`; `merged_copy` turns it into a plain model for saving.

    Raises:
        SpecError: `train.peft.target_modules` names no layer of the encoder, or the model type has
            no default.
        RuntimeError: `resume_from` holds no adapter for this model.
    """
    from peft import LoraConfig, get_peft_model

    cfg = spec.train.peft
    if cfg is None:
        raise ValueError("apply_lora needs a spec with train.peft set")
    # Targets are looked for in the encoder only (`model.bert`, `model.roberta`, ...), the head apart.
    encoder_name = model.base_model_prefix
    encoder = getattr(model, encoder_name, None)
    if encoder is None:
        encoder_name, encoder = "", model
    prefix = f"{encoder_name}." if encoder_name else ""
    targets = [prefix + name for name in lora_targets(encoder, model.config.model_type, spec)]
    config = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, bias="none",
                        target_modules=targets, modules_to_save=head_module_names(model))
    with warnings.catch_warnings():
        # peft asks transformers about gradient checkpointing under a name transformers 5 deprecates.
        warnings.simplefilter("ignore", FutureWarning)
        wrapped = get_peft_model(model, config)
    if resume_from is not None:
        _load_adapter(wrapped, Path(resume_from) / ADAPTER_DIR)
    return wrapped


def lora_targets(encoder: Any, model_type: str, spec: Spec) -> list[str]:
    """The names (relative to `encoder`) of the Linear layers that `spec.train.peft` adapts.

    Raises:
        SpecError: naming `train.peft.target_modules`, the model and the layer names it has.
    """
    import torch

    cfg = spec.train.peft
    linear = [name for name, module in encoder.named_modules() if isinstance(module, torch.nn.Linear)]
    available = ", ".join(sorted({name.rsplit(".", 1)[-1] for name in linear}))
    wanted = list(cfg.target_modules) if cfg and cfg.target_modules else _default_targets(model_type)
    if not wanted:
        raise SpecError(spec.source, [
            f"train.peft.target_modules: model {spec.model.name_or_path!r} (type {model_type!r}) has no default "
            f"LoRA targets; name the Linear layers to adapt, e.g. target_modules: [{available}]"])
    chosen, problems = [], []
    for target in wanted:
        found = [name for name in linear if name == target or name.endswith(f".{target}")]
        if not found:
            problems.append(f"train.peft.target_modules: {target!r} matches no Linear layer of the encoder of "
                            f"{spec.model.name_or_path!r} (type {model_type!r}); its Linear layers are named "
                            f"{available} (a dotted suffix such as attention.output.dense picks one of several)")
        chosen += [name for name in found if name not in chosen]
    if problems:
        raise SpecError(spec.source, problems)
    return chosen


def check_lora(spec: Spec) -> None:
    """Check `train.peft` against the model before any Ray work: the target layers exist (or the type
    has a default). Builds the bare encoder on the meta device, so no weights are read.

    Raises:
        SpecError: see `lora_targets`.
    """
    if spec.train.peft is None:
        return
    import torch
    import transformers

    config = transformers.AutoConfig.from_pretrained(resolve_model_path(spec.model.name_or_path))
    with torch.device("meta"):
        encoder = transformers.AutoModel.from_config(config)
    lora_targets(encoder, config.model_type, spec)


def is_adapted(model: Any) -> bool:
    """Whether `model` is a peft-wrapped model (without importing peft when nothing did)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def merged_copy(model: Any) -> Any:
    """The plain transformers model with the LoRA updates folded into its weights, leaving `model`
    (still training) untouched. The copy costs the model's weights once more, on their device, while
    the checkpoint is written (not the optimizer state, nor activations)."""
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(model).merge_and_unload()


def parameter_counts(model: Any) -> dict[str, int]:
    """`{"trainable", "total"}` parameters of the model as it trains (with LoRA: adapters and head
    trainable; total includes the adapters)."""
    params = list(model.parameters())
    return {"trainable": sum(p.numel() for p in params if p.requires_grad), "total": sum(p.numel() for p in params)}


def _default_targets(model_type: str) -> list[str]:
    if model_type in DEFAULT_TARGETS:
        return list(DEFAULT_TARGETS[model_type])
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    found = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type)
    # A few peft entries are regular expressions over decoder stacks; encoders use lists of names.
    return list(found) if isinstance(found, (list, tuple)) else []


def _load_adapter(model: Any, folder: Path) -> None:
    """Load a saved adapter (LoRA weights and head) into a model wrapped by `apply_lora`."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise RuntimeError(f"{folder.parent}: no {ADAPTER_DIR}/adapter_model.safetensors to resume LoRA training "
                           "from; this checkpoint was written by a run without train.peft")
    state = load_file(str(weights))
    result = set_peft_model_state_dict(model, state)
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    if result.unexpected_keys or len(state) != trainable:
        raise RuntimeError(f"{folder}: the adapter does not fit this model ({len(state)} tensors for {trainable} "
                           f"trainable ones; unexpected: {list(result.unexpected_keys)[:3]}); it was saved with "
                           "other train.peft settings or another model")
