"""Data validation of ingested datasets with Great Expectations.

The only package in the project that imports ``great_expectations`` (lazily, on the first
:func:`validate_dataset` call), so importing this package stays cheap.
"""

from ssl_tasks.validation.gx_suite import ValidationConfig, ValidationFailed, validate_dataset
from ssl_tasks.validation.tables import DatasetTables

__all__ = [
    "DatasetTables",
    "ValidationConfig",
    "ValidationFailed",
    "validate_dataset",
]
