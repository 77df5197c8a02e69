"""Resumable CSV results shared by the benchmarks: rows already written are read back and skipped."""

import csv


def done_rows(path):
    """The rows of the CSV at `path` (a list of dicts; empty when the file does not exist yet)."""
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def append(path, fields, row):
    """Append `row` to the CSV at `path` at once, writing the header first for a new file."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        if new:
            writer.writeheader()
        writer.writerow(row)
