"""BEiT's blockwise masks: exact counts, blocks rather than scattered patches, seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssl_tasks.modalities.image.block_masking import block_mask


def _masked_neighbour_fraction(mask: torch.Tensor, gh: int, gw: int) -> float:
    """Fraction of masked patches with at least one masked 4-neighbour."""
    m = mask.view(-1, 1, gh, gw).float()
    kernel = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    neighbours = F.conv2d(m, kernel, padding=1)  # (B, 1, gh, gw)
    return float(((neighbours > 0) & (m > 0)).sum() / m.sum())


def test_exact_count_and_seeded() -> None:
    m = block_mask(64, 14, 14, 0.4, torch.Generator().manual_seed(0))
    assert m.shape == (64, 196) and m.dtype == torch.bool
    assert (m.sum(dim=1) == round(0.4 * 196)).all()
    assert torch.equal(m, block_mask(64, 14, 14, 0.4, torch.Generator().manual_seed(0)))
    assert not torch.equal(m, block_mask(64, 14, 14, 0.4, torch.Generator().manual_seed(1)))
    assert len({tuple(r.tolist()) for r in m}) > 60  # samples get their own masks


def test_masks_are_blocks_not_scattered_patches() -> None:
    g = torch.Generator().manual_seed(0)
    blocks = block_mask(64, 14, 14, 0.4, g)
    scattered = torch.rand(64, 196, generator=g).argsort(dim=1).argsort(dim=1) < 78  # uniform, same count
    assert _masked_neighbour_fraction(blocks, 14, 14) > 0.95
    assert _masked_neighbour_fraction(blocks, 14, 14) > _masked_neighbour_fraction(scattered, 14, 14) + 0.1


def test_tiny_grid_still_masks_and_leaves_patches_visible() -> None:
    m = block_mask(32, 4, 4, 0.4, torch.Generator().manual_seed(0))
    assert (m.sum(dim=1) == 6).all()
    m = block_mask(8, 2, 2, 0.99, torch.Generator().manual_seed(0))
    assert (m.sum(dim=1) == 3).all()  # never all N
    with pytest.raises(ValueError, match="mask ratio"):
        block_mask(2, 4, 4, 1.0, torch.Generator())
