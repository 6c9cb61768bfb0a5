"""The registered model as an MLflow pyfunc: a tunefleet checkpoint behind `Predictor`.

The model folder MLflow stores holds `data/checkpoint/` (the Hugging Face `save_pretrained` layout plus
tokenizer and `tunefleet.json`, so `transformers` users can load it directly) and an `MLmodel` whose
`loader_module` is this module. Loading needs tunefleet importable (it is, wherever tunefleet is
installed: `mlflow models serve ... --env-manager local`). Nothing is pickled.

Input: a DataFrame (or list of records / strings) with a string column `text`, and `text_pair` for
sentence-pair tasks. Output: a DataFrame, one row per input, with the task's answer columns (its
`output_schema`): `label` and `score` for classification, `score` for regression, `labels` and
`scores` for multi-label, `entities` (a list of `{type, start, end, text, score}` objects,
`start`/`end` being character offsets into the input text, end exclusive) for NER. MLflow's own
transformers pyfunc returns NER tokens, not spans with offsets; this keeps the spans.
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

        batch_size = int((params or {}).get("batch_size", 32))
        rows = self.predictor.predict(_inputs(model_input), batch_size=batch_size)
        columns = [column.name for column in self.predictor.task.output_schema().inputs]
        return pd.DataFrame({column: [row[column] for row in rows] for column in columns})


def _load_pyfunc(data_path: str) -> TunefleetModel:
    """MLflow's loader_module entry point; `data_path` is the model's `checkpoint/` folder."""
    return TunefleetModel(data_path)


def _inputs(model_input: Any) -> list[Any]:
    """Rows as the task's input dicts: `text` (else the first column) and `text_pair` where present."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        text = "text" if "text" in model_input.columns else model_input.columns[0]
        pairs = model_input["text_pair"].tolist() if "text_pair" in model_input.columns else None
        texts = [str(t) for t in model_input[text].tolist()]
        if pairs is None:
            return texts
        return [{"text": t, "text_pair": str(p)} if p is not None and not pd.isna(p) else {"text": t}
                for t, p in zip(texts, pairs)]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, dict):
        value = model_input.get("text", [])
        if isinstance(value, str):
            return [model_input]
        pairs = model_input.get("text_pair")
        return [str(t) for t in value] if pairs is None else [{"text": str(t), "text_pair": str(p)} for t, p in zip(value, pairs)]
    return list(model_input)


def signature(task_name: str) -> Any:
    """The task's input and answer columns (see the module doc)."""
    from mlflow.models import ModelSignature

    from ..tasks import get_task

    task = get_task(task_name)
    return ModelSignature(inputs=task.input_schema(), outputs=task.output_schema())


def save_pyfunc(checkpoint: str, path: str, task: str, example_inputs: list[dict[str, str]]) -> None:
    """Write the pyfunc model folder at `path` (a clean copy of the checkpoint inside)."""
    import shutil
    import tempfile
    from importlib.metadata import version
    from pathlib import Path

    import mlflow.pyfunc
    import pandas as pd

    from ..train.checkpoint import ADAPTER_DIR, STATE_FILE

    with tempfile.TemporaryDirectory(prefix="tunefleet-pyfunc-") as tmp:
        # Optimizer and RNG state, and a LoRA run's adapter (its weights are merged into the model),
        # are for resuming training, not for serving: leave them out.
        clean = Path(tmp) / CHECKPOINT_DIR
        shutil.copytree(checkpoint, clean, ignore=shutil.ignore_patterns(STATE_FILE, ADAPTER_DIR))
        requirements = [f"{p}=={version(p)}" for p in ("mlflow", "torch", "transformers", "pandas")]
        mlflow.pyfunc.save_model(
            path, loader_module=__name__, data_path=str(clean), code_paths=None,
            signature=signature(task), input_example=pd.DataFrame(example_inputs),
            # Explicit requirements: inferring them would load the model in a subprocess.
            pip_requirements=requirements + ["tunefleet"],
        )
