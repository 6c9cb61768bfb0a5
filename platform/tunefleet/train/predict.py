"""Predictions from a checkpoint on raw inputs: what `tunefleet predict`, the registered MLflow model
and the Ray Serve deployment all call, so the three always agree.

An input is a string or an object such as `{"text": ..., "text_pair": ...}`; the checkpoint's task
checks it, encodes a batch, and turns the logits into answers: `{"label", "score"}` for
classification, `{"score"}` for regression, `{"labels", "scores"}` for multi-label, `{"entities":
[...]}` (spans with character offsets) for NER. See each task module for its answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..tasks import get_task
from .checkpoint import load_for_inference


class Predictor:
    """A loaded checkpoint that answers raw inputs.

    Args:
        folder: a complete tunefleet checkpoint (see `checkpoint`).
        device: torch device string.
        precision: `fp32` (default: exact agreement everywhere), `bf16` (autocast) or `auto` (bf16
            where the CPU/GPU runs it natively). On a CPU with AVX-512 bf16, bf16 makes large
            batches several times faster (what a batching server wants); scores move by ~1e-2.
    """

    def __init__(self, folder: str | Path, device: str = "cpu", precision: str = "fp32"):
        import torch

        from .models import resolve_precision

        if precision not in ("fp32", "bf16", "auto"):
            raise ValueError(f"precision {precision!r}: use fp32, bf16 or auto")
        self.model, self.tokenizer, self.meta = load_for_inference(folder, device)
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, device)
        self.task = get_task(self.meta["task"])
        self.label_names: list[str] = self.meta["label_names"]
        self.max_length: int = int(self.meta.get("max_length", 128))

    @property
    def task_name(self) -> str:
        return self.task.name

    def check(self, inputs: list[Any], name: str = "input") -> list[dict[str, str]]:
        """Each input as the task's dict form.

        Raises:
            ValueError: naming the first bad input (`input[3] ...`) and the shape to send.
        """
        return [self.task.check_input(item, f"{name}[{i}]") for i, item in enumerate(inputs)]

    def predict(self, inputs: list[Any], batch_size: int = 32) -> list[dict[str, Any]]:
        items = self.check(inputs)
        out: list[dict[str, Any]] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            encoded = self.task.encode(self.tokenizer, chunk, self.max_length)
            out += self.task.answers(self._logits(encoded), encoded, chunk, self.label_names)
        return out

    def _logits(self, encoded: Any) -> Any:
        import torch

        # Only what the model takes: NER's encoding also carries the offset mapping for its answers.
        inputs = {k: v.to(self.device) for k, v in encoded.items() if k in self.tokenizer.model_input_names}
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        with torch.inference_mode(), autocast:
            return self.model(**inputs).logits.float().cpu().numpy()
