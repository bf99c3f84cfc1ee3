"""Image modality: batched views, encoders (the imports below fill ``ENCODERS``)."""

from ssl_tasks.modalities.image import encoders, vit  # noqa: F401  (registration)
