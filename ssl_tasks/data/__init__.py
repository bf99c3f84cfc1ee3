"""What every modality shares for ingestion: the source registry, split and tar helpers (``sources``), TSV/CSV/JSONL
table reading (``tables``), the manifest-backed reader base and the shard writers' helpers (``shards``) and the
ingest entry (``ingest``). Each modality keeps its own sources and dataset format in its package:
``ssl_tasks.modalities.<name>.sources`` and ``.shards``."""
