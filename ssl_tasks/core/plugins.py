"""Plug-ins: modules named in params.yaml's ``plugins`` list, imported before anything is parsed or trained, so
the modalities, sources, encoders and objectives they register exist in every process that needs them (the
stage's and each Ray worker's)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from ssl_tasks.core.errors import UserError


def load_plugins(names: Any, root: str | Path | None = None) -> None:
    """Import every module in ``names``: from ``sys.path``, or from ``root`` (the project folder, where
    params.yaml lives), which is appended to ``sys.path``. Importing one twice is a no-op."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) and n for n in names):
        raise UserError(f"plugins: expected a list of module names, got {names!r}")
    if root and str(root) not in sys.path:
        sys.path.append(str(root))
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise UserError(f"plugins: cannot import {name!r}: {e}") from None
