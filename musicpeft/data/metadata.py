"""The metadata file of an audio folder: ``metadata.jsonl``, ``metadata.csv`` or ``metadata.parquet``.

These are the three names of the datasets ``audiofolder`` convention, one record per audio file (``file_name``,
or audiocraft's ``path``, plus a caption and tags). Reading goes row by row: a bad row comes back with its
problem and its place (line of a JSON-lines or CSV file, row of a Parquet table) so that a caller can skip it
and say so, instead of one typo stopping a whole run.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

# The datasets `audiofolder` names; like datasets, a folder may hold only one of them.
METADATA_FILES: tuple[str, ...] = ("metadata.jsonl", "metadata.csv", "metadata.parquet")

Row = tuple[int, dict | None, str | None]


def find_metadata(folder: str | os.PathLike) -> Path | None:
    """The folder's metadata file, or None when it has none; an error when it has several."""
    present = [name for name in METADATA_FILES if os.path.isfile(os.path.join(folder, name))]
    if len(present) > 1:
        raise ValueError(f"{folder}: holds {' and '.join(present)}; keep one metadata file "
                         "(datasets' audiofolder refuses several too)")
    return Path(folder) / present[0] if present else None


def _jsonl_rows(path: str) -> list[Row]:
    rows: list[Row] = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                rows.append((number, None, f"{path}:{number}: not valid JSON ({e.msg})"))
                continue
            if not isinstance(record, dict):
                rows.append((number, None, f"{path}:{number}: expected a JSON object, got {type(record).__name__}"))
                continue
            rows.append((number, record, None))
    return rows


def _csv_rows(path: str) -> list[Row]:
    """Rows of a CSV file with a header line (a spreadsheet's byte-order mark is dropped); empty rows skipped."""
    rows: list[Row] = []
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        try:
            for row in reader:
                number = reader.line_num
                if None in row:  # DictReader's key for values beyond the header
                    rows.append((number, None, f"{path}:{number}: {len(reader.fieldnames or [])} columns in the "
                                               f"header, more values in this row"))
                    continue
                record = {key: value for key, value in row.items() if value not in (None, "")}
                if record:
                    rows.append((number, record, None))
        except csv.Error as e:
            rows.append((reader.line_num, None, f"{path}:{reader.line_num}: not valid CSV ({e}); rows after it "
                                                "were not read"))
    return rows


def _parquet_rows(path: str) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow's errors name no file: say which one
        raise ValueError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from e
    return [(number, record, None) for number, record in enumerate(records, start=1)]


def read_metadata_lines(path: str | os.PathLike) -> list[Row]:
    """``(line or row number, record or None, problem or None)`` for each record of a metadata file.

    The format follows the name's suffix: ``.jsonl`` (one JSON object per non-empty line), ``.csv`` (a header
    line, then one row per file) or ``.parquet``. A record that cannot be read comes back with its problem.
    """
    path = os.fspath(path)
    readers = {".jsonl": _jsonl_rows, ".json": _jsonl_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    suffix = Path(path).suffix.lower()
    if suffix not in readers:
        raise ValueError(f"{path}: unknown metadata format {suffix!r}; expected one of {', '.join(METADATA_FILES)}")
    return readers[suffix](path)


def load_metadata(path: str | os.PathLike) -> list[dict]:
    """Every record of a metadata file (JSON lines, CSV or Parquet); the first bad record raises."""
    records = []
    for _, record, problem in read_metadata_lines(path):
        if problem is not None:
            raise ValueError(problem)
        records.append(record)
    return records
