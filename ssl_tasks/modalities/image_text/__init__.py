"""Image–text modality: image shards with captions; composes the image and text modalities."""
