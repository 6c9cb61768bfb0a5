"""The registered model as an MLflow pyfunc: a tunefleet checkpoint behind `Predictor`.

The model folder MLflow stores holds `data/checkpoint/` (the Hugging Face `save_pretrained` layout plus
tokenizer and `tunefleet.json`, so `transformers` users can load it directly) and an `MLmodel` whose
`loader_module` is this module. Loading needs tunefleet importable (it is, wherever tunefleet is
installed: `mlflow models serve ... --env-manager local`). Nothing is pickled.

Input: a DataFrame (or list of records / strings) with a string column `text`.
Output: a DataFrame, one row per text:
- text classification: columns `label` (string) and `score` (double, the label's probability);
- NER: one column `entities`, a list of `{type, start, end, text, score}` objects, `start`/`end`
  being character offsets into the input text (end exclusive).
MLflow's own transformers pyfunc returns NER tokens, not spans with offsets; this keeps the spans.
"""

from __future__ import annotations

from typing import Any

CHECKPOINT_DIR = "checkpoint"
# Where save_model puts `data_path` inside the model folder.
CHECKPOINT_ARTIFACT = f"data/{CHECKPOINT_DIR}"


class TunefleetModel:
    """What `mlflow.pyfunc.load_model` wraps: `predict(DataFrame) -> DataFrame`."""

    def __init__(self, checkpoint: str):
        from ..train.predict import Predictor

        self.predictor = Predictor(checkpoint)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        texts = _texts(model_input)
        batch_size = int((params or {}).get("batch_size", 32))
        rows = self.predictor.predict(texts, batch_size=batch_size)
        if self.predictor.task == "text-classification":
            return pd.DataFrame({"label": [r["label"] for r in rows], "score": [r["score"] for r in rows]})
        return pd.DataFrame({"entities": [r["entities"] for r in rows]})


def _load_pyfunc(data_path: str) -> TunefleetModel:
    """MLflow's loader_module entry point; `data_path` is the model's `checkpoint/` folder."""
    return TunefleetModel(data_path)


def _texts(model_input: Any) -> list[str]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(t) for t in model_input[column].tolist()]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, dict):
        value = model_input.get("text", [])
        return [value] if isinstance(value, str) else [str(t) for t in value]
    return [t["text"] if isinstance(t, dict) else str(t) for t in model_input]


def signature(task: str) -> Any:
    """Input `text: string`; output as in the module doc."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema
    from mlflow.types.schema import Array, Object, Property

    inputs = Schema([ColSpec(DataType.string, "text")])
    if task == "text-classification":
        outputs = Schema([ColSpec(DataType.string, "label"), ColSpec(DataType.double, "score")])
    else:
        entity = Object([Property("type", DataType.string), Property("start", DataType.long),
                         Property("end", DataType.long), Property("text", DataType.string),
                         Property("score", DataType.double)])
        outputs = Schema([ColSpec(Array(entity), "entities")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def save_pyfunc(checkpoint: str, path: str, task: str, example_texts: list[str]) -> None:
    """Write the pyfunc model folder at `path` (a clean copy of the checkpoint inside)."""
    import shutil
    import tempfile
    from importlib.metadata import version
    from pathlib import Path

    import mlflow.pyfunc
    import pandas as pd

    from ..train.checkpoint import STATE_FILE

    with tempfile.TemporaryDirectory(prefix="tunefleet-pyfunc-") as tmp:
        # Optimizer and RNG state are for resuming training, not for serving: leave them out.
        clean = Path(tmp) / CHECKPOINT_DIR
        shutil.copytree(checkpoint, clean, ignore=shutil.ignore_patterns(STATE_FILE))
        requirements = [f"{p}=={version(p)}" for p in ("mlflow", "torch", "transformers", "pandas")]
        mlflow.pyfunc.save_model(
            path, loader_module=__name__, data_path=str(clean), code_paths=None,
            signature=signature(task), input_example=pd.DataFrame({"text": example_texts}),
            # Explicit requirements: inferring them would load the model in a subprocess.
            pip_requirements=requirements + ["tunefleet"],
        )
