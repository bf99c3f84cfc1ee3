"""Ingestion sources, the canonical shard format and streaming readers."""
