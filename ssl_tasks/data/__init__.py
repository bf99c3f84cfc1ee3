"""What every modality shares for ingestion: the source registry and split helpers (``sources``), the
manifest-backed readers and shard streaming (``shards``), and the ingest entry (``ingest``). The image
modality's own sources and format still live here too; text and image–text keep theirs in their packages."""
