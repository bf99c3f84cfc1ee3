"""The encoder registry and base class shared by every modality's encoders.

An encoder maps a modality's batch to pooled features (B, D), exposes ``out_dim``, says which data it encodes
(``modality``) and declares its ``capabilities`` (what objectives may ask of it: ``pooled``, ``tokens``, ...).
Each modality package registers its encoders with ``@ENCODERS.register(name)``.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from ssl_tasks.core.registry import Registry

ENCODERS: Registry[type[nn.Module]] = Registry("encoder")


class Encoder(nn.Module):
    """Base class: pooled features of width ``out_dim``."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"pooled"})
    modality: ClassVar[str]  # the data it encodes
    out_dim: int
