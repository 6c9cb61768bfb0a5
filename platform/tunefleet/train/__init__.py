"""Train: one fine-tuning run, from tokenized splits to a checkpoint, and inference from it.

- `models`: where a pretrained encoder and its tokenizer come from, with a fresh task head;
- `peft`: LoRA (`train.peft`): adapters on the frozen encoder, merged into what is saved;
- `tokenized`: tokenize the splits once and cache them on disk;
- `batching`: length-grouped, sharded, dynamically padded batches;
- `dropout`: dropout with cheaper random masks, for training on a CPU;
- `onednn`: fp32 linear layers through oneDNN rather than MKL, on a CPU;
- `loop`: `run_loop`, the loop every worker runs (read it top to bottom), and Ray Train's entry point;
- `session`: where the loop runs: inside Ray Train, in a Ray Tune trial's own process, or without Ray
  (one process or torchrun);
- `local`: `train_local` and `python -m tunefleet.train.local`, the loop without Ray;
- `checkpoint`: the checkpoint folder (HF layout + `tunefleet.json`) and resuming from it;
- `runlog`: rank 0's metrics to its MLflow run, batched in the background;
- `launch`: the Ray Train launcher (`build_trainer`, `fit_and_score`);
- `predict`: `Predictor`, raw text in, task answers out, as `predict`, the registry and serving use it.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "train_loop_per_worker": "loop", "run_loop": "loop", "evaluate": "loop", "train_local": "local",
    "build_trainer": "launch", "fit_and_score": "launch", "prepare_data": "launch",
    "score_checkpoint": "launch", "TrainingDiverged": "launch", "TrainingOutOfMemory": "loop",
    "build_model": "models", "load_tokenizer": "models", "apply_lora": "peft",
    "Predictor": "predict",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
