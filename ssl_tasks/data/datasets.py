"""Open an ingested dataset of any modality, dispatching on its manifest's ``format``."""

from __future__ import annotations

from pathlib import Path

from ssl_tasks.core.errors import UserError
from ssl_tasks.data import pair_shards, shards, text_shards
from ssl_tasks.data.pair_shards import PairDataset
from ssl_tasks.data.shards import ImageDataset
from ssl_tasks.data.text_shards import TextDataset, read_manifest

READERS: dict[str, type[ImageDataset] | type[TextDataset]] = {
    shards.FORMAT: ImageDataset,
    text_shards.FORMAT: TextDataset,
    pair_shards.FORMAT: PairDataset,  # an ImageDataset with captions
}


def _reader(root: Path) -> type[ImageDataset] | type[TextDataset]:
    fmt = read_manifest(root).get("format")
    try:
        return READERS[fmt]
    except (KeyError, TypeError):
        raise UserError(
            f"{Path(root) / 'manifest.json'}: unknown dataset format {fmt!r}; known: {', '.join(READERS)}"
        ) from None


def open_dataset(root: Path) -> ImageDataset | TextDataset:
    """The reader for the dataset at ``root`` (image, text or image-caption pairs)."""
    return _reader(Path(root))(Path(root))


def dataset_modality(root: Path) -> str:
    """``"image"``, ``"text"`` or ``"image_text"``: the modality of the dataset at ``root``, from its manifest format."""
    return _reader(Path(root)).modality
