"""Reading TSV/CSV/JSONL tables, for every source that ingests one (text tables, image–caption tables).

Bytes are decoded as UTF-8 with ``errors="replace"`` (a leading BOM dropped): undecodable bytes become U+FFFD
and are left for validation to report. :func:`table_rows` yields ``(line number, row)`` of a table whose
``needed`` columns (JSONL: keys) it has checked, with a one-line UserError naming the file, line, column and
the option that named it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ssl_tasks.core.errors import UserError

TABLE_FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl"}


def decode_text(path: Path) -> tuple[str, str]:
    """(text, sha256 of the bytes): UTF-8 (a leading BOM dropped), bad bytes replaced by U+FFFD."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {path}: {e}") from None
    return data.decode("utf-8-sig", errors="replace"), hashlib.sha256(data).hexdigest()


def csv_rows(path: Path, content: str, fmt: str) -> tuple[list[str], Iterator[tuple[int, dict[str, Any]]]]:
    """Header and (line number, row) of a TSV (quoting disabled) or CSV (standard quoting)."""
    kwargs: dict[str, Any] = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {}
    reader = csv.reader(io.StringIO(content, newline=""), **kwargs)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise UserError(f"{path} is empty: no header row") from None
    except csv.Error as e:
        raise UserError(f"{path}:1: {e}") from None

    def rows() -> Iterator[tuple[int, dict[str, Any]]]:
        try:
            for row in reader:
                if not row:  # a blank line
                    continue
                if len(row) != len(header):
                    raise UserError(
                        f"{path}:{reader.line_num}: {len(row)} fields but the header has {len(header)} "
                        f"({', '.join(header)})"
                    )
                yield reader.line_num, dict(zip(header, row, strict=True))
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: {e}") from None

    return header, rows()


def jsonl_rows(path: Path, content: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, line in enumerate(content.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise UserError(f"{path}:{n}: not a JSON object ({e})") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def missing_column(where: str, kind: str, column: str, option: str, have: list[str], hint: str) -> UserError:
    return UserError(f"{where} has no {kind} {column!r} (option {option}); it has: {', '.join(have)}{hint}")


def table_rows(path: Path, fmt: str, content: str, needed: Sequence[tuple[str, str]], hint: str = ""
               ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of every row of a ``fmt`` table; each row has the ``needed`` (column, option) pairs.

    A TSV/CSV header lacking a needed column fails before any row is read (with ``hint`` appended); a JSONL row
    lacking a needed key fails at that row.
    """
    if fmt == "jsonl":
        rows = jsonl_rows(path, content)
    else:
        header, rows = csv_rows(path, content, fmt)
        for col, option in needed:
            if col not in header:
                raise missing_column(str(path), "column", col, option, header, hint)

    def checked() -> Iterator[tuple[int, dict[str, Any]]]:
        for n, row in rows:
            if fmt == "jsonl":
                for col, option in needed:
                    if col not in row:
                        raise missing_column(f"{path}:{n}", "key", col, option, list(row), hint)
            yield n, row

    return checked()
