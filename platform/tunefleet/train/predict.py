"""Predictions from a checkpoint on raw text: what `tunefleet predict`, the registered MLflow model
and the Ray Serve deployment all call, so the three always agree.

Classification returns `{"label", "score"}` per text. NER returns `{"entities": [...]}` per text,
each entity `{"type", "start", "end", "text", "score"}` with character offsets into the input, so a
caller can highlight spans without re-tokenizing. The text is split into words by the tokenizer's own
pre-tokenizer (whitespace and punctuation, as CoNLL tokens are); each word takes the tag predicted
for its first sub-word, exactly as in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import load_for_inference


class Predictor:
    """A loaded checkpoint that labels raw texts.

    Args:
        folder: a complete tunefleet checkpoint (see `_checkpoint`).
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
        self.task: str = self.meta["task"]
        self.label_names: list[str] = self.meta["label_names"]
        self.max_length: int = int(self.meta.get("max_length", 128))

    def predict(self, texts: list[str], batch_size: int = 32) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            out += self._classify(chunk) if self.task == "text-classification" else self._tag(chunk)
        return out

    def _forward(self, texts: list[str], offsets: bool) -> tuple[Any, np.ndarray]:
        import torch

        encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=True,
                                 return_offsets_mapping=offsets, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in encoded.items() if k != "offset_mapping"}
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        with torch.inference_mode(), autocast:
            logits = self.model(**inputs).logits.float()
        return encoded, torch.softmax(logits, dim=-1).cpu().numpy()

    def _classify(self, texts: list[str]) -> list[dict[str, Any]]:
        _, probs = self._forward(texts, offsets=False)
        best = probs.argmax(-1)
        return [{"label": self.label_names[i], "score": float(p[i])} for i, p in zip(best, probs)]

    def _tag(self, texts: list[str]) -> list[dict[str, Any]]:
        encoded, probs = self._forward(texts, offsets=True)
        results = []
        for row, text in enumerate(texts):
            offsets = encoded["offset_mapping"][row].tolist()
            words: list[tuple[int, int, str, float]] = []  # (start, end, tag, probability)
            previous = None
            for position, word in enumerate(encoded.word_ids(row)):
                if word is None:
                    continue
                start, end = offsets[position]
                if word != previous:
                    tag_id = int(probs[row, position].argmax())
                    words.append((start, end, self.label_names[tag_id], float(probs[row, position, tag_id])))
                else:  # a later sub-word of the same word only extends its character span
                    words[-1] = (words[-1][0], end, words[-1][2], words[-1][3])
                previous = word
            results.append({"entities": spans_from_tags(text, words)})
        return results


def spans_from_tags(text: str, words: list[tuple[int, int, str, float]]) -> list[dict[str, Any]]:
    """Merge word tags (IOB2) into entity spans. An `I-` that does not continue an entity of its
    type starts one, rather than being dropped: a model's slip should not hide the entity."""
    entities: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for start, end, tag, prob in words:
        prefix, _, kind = tag.partition("-")
        if prefix == "I" and current is not None and current["type"] == kind:
            current["end"], current["_probs"] = end, current["_probs"] + [prob]
            continue
        if current is not None:
            entities.append(current)
            current = None
        if prefix in ("B", "I"):
            current = {"type": kind, "start": start, "end": end, "_probs": [prob]}
    if current is not None:
        entities.append(current)
    for entity in entities:
        probs = entity.pop("_probs")
        entity["text"] = text[entity["start"]:entity["end"]]
        entity["score"] = float(sum(probs) / len(probs))
    return entities
