"""The speech modality's shared facts: the feature encoder's frame grid and what a speech objective is told.

Both the encoders (``modalities/speech/encoders.py``) and everything that works per frame (HuBERT's MFCC k-means
targets, masking, the feed) use ``conv_frames`` so that targets and encoder frames line up one to one. The default
grid is wav2vec 2.0's: seven 1-D convolutions, kernels (10, 3, 3, 3, 3, 2, 2), strides (5, 2, 2, 2, 2, 2, 2), no
padding: a 400-sample receptive field every 320 samples (25 ms every 20 ms at 16 kHz).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

CONV_LAYERS: tuple[tuple[int, int], ...] = ((10, 5), (3, 2), (3, 2), (3, 2), (3, 2), (2, 2), (2, 2))


def conv_frames(num_samples: int, layers: Sequence[tuple[int, int]] = CONV_LAYERS) -> int:
    """Frames the unpadded convolution stack ``layers`` ((kernel, stride), ...) makes of ``num_samples`` samples."""
    n = int(num_samples)
    for kernel, stride in layers:
        n = (n - kernel) // stride + 1 if n >= kernel else 0
    return max(n, 0)


def receptive_field(layers: Sequence[tuple[int, int]] = CONV_LAYERS) -> tuple[int, int]:
    """(receptive field, hop) in samples of the stack: (400, 320) for the default."""
    field, hop = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * hop
        hop *= stride
    return field, hop


@dataclass(frozen=True)
class SpeechDataSpec:
    """What a speech objective is told about its data.

    ``num_samples``: the fixed waveform length of every batch row (samples, after resampling / crop / pad);
    ``num_targets``: the number of HuBERT target classes in the batches (0 when the run has no targets).
    """

    sample_rate: int
    num_samples: int
    num_targets: int = 0


__all__ = ["CONV_LAYERS", "SpeechDataSpec", "conv_frames", "receptive_field"]
