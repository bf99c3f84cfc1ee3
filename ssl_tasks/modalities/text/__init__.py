"""Text modality: subword tokenizer, token rows (packed or padded), transformer encoders, corruptions.

The import below fills ``ENCODERS`` with the text encoders.
"""

from ssl_tasks.modalities.text import encoders  # noqa: F401  (registration)
