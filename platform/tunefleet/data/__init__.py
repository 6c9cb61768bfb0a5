"""Data: read a data set into labelled train/validation/test splits and report on them.

`load_data(spec.data, task)` is the only way data enters tunefleet; `data_report` summarises the
splits before any compute is spent. Imports only `tunefleet.spec` (and the task passed in).
"""

from .load import DataError, DataSplits, Examples, data_report, generate_synthetic, load_data

__all__ = ["DataError", "DataSplits", "Examples", "data_report", "generate_synthetic", "load_data"]
