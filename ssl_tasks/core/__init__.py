"""Shared building blocks: registries, errors, atomic I/O, EMA, distributed helpers."""
