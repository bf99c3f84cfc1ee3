"""Data validation of ingested datasets with Great Expectations.

The only package in the project that imports ``great_expectations`` (lazily, on the first
:func:`validate_dataset` call), so importing this package stays cheap.
"""

from ssl_tasks.validation.gx_suite import ValidationConfig, ValidationFailed, validate_dataset
from ssl_tasks.validation.image_checks import DatasetTables, build_tables
from ssl_tasks.validation.pair_checks import PairTables, build_pair_tables
from ssl_tasks.validation.text_checks import build_text_tables

__all__ = [
    "DatasetTables",
    "PairTables",
    "ValidationConfig",
    "ValidationFailed",
    "build_pair_tables",
    "build_tables",
    "build_text_tables",
    "validate_dataset",
]
