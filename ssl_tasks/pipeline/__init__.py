"""Stage functions (ingest, validate, baselines, pretrain, evaluate, compare) and the CLI."""
