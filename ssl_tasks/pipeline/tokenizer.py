"""The ``tokenizer@<dataset>`` stage: the dataset's tokenizer or targets, as its modality defines them (byte-level
BPE for text and captions, k-means visual tokens for images)."""

from __future__ import annotations

from typing import Any

from ssl_tasks.core.modality import modality_of
from ssl_tasks.pipeline.layout import Layout, say
from ssl_tasks.pipeline.params import Params


def tokenizer(params: Params, dataset: str, layout: Layout) -> dict[str, Any]:
    """Write ``artifacts/tokenizers/<dataset>/`` atomically; return the summary."""
    modality = modality_of(layout.data(dataset))
    summary = modality.train_tokenizer(layout.data(dataset), layout.tokenizer_dir(dataset),
                                       params.dataset(dataset).tokenizer_params(),
                                       lambda line: say(f"tokenizer {dataset}: {line}"))
    return summary
