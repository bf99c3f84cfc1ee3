"""The image modality: batched on-device views and encoders."""
