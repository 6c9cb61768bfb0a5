"""Data: read a data set into labelled train/validation/test splits and report on them.

`load_data(spec.data, task)` is the only way data enters tunefleet; `data_report` summarises the
splits before any compute is spent. The task (an object of the `tasks.base.Task` protocol, or its
name in the plug-in registry) decides everything task-specific; nothing here names a task.

- `examples.py`: `Examples`, `DataSplits`, `DataError`;
- `readers.py`: one reader per `data.format`;
- `load.py`: `load_data` (checks, carving, subsetting, fingerprint) and `generate_synthetic`;
- `synthetic.py`: the demo data sets the tasks generate;
- `report.py`: `data_report`.

Imports only `tunefleet.spec` and `tunefleet.plugins` (the task arrives as an object).
"""

from .examples import DataError, DataSplits, Examples
from .load import generate_synthetic, load_data
from .report import data_report

__all__ = ["DataError", "DataSplits", "Examples", "data_report", "generate_synthetic", "load_data"]
