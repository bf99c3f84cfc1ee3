"""What a video objective is told about its data (``VideoDataSpec``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoDataSpec:
    """Clips of ``frames`` frames of ``channels`` x ``height`` x ``width`` pixels; ``mean``/``std``: one value per
    channel, over the train split's pixels in [0, 1] (the views are ``(x / 255 - mean) / std``)."""

    frames: int
    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if min(self.frames, self.channels, self.height, self.width) < 1:
            raise ValueError(f"video shape must be positive, got frames={self.frames} channels={self.channels} "
                             f"height={self.height} width={self.width}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need one value per channel ({self.channels}), got {len(self.mean)} "
                             f"and {len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")


__all__ = ["VideoDataSpec"]
