"""Resumable CSV results shared by the benchmarks: rows already written are read back and skipped."""

import csv


def done_rows(path):
    """The rows of the CSV at `path` (a list of dicts; empty when the file does not exist yet)."""
    if not path.exists():
        return []
    with path.open() as handle:
        return list(csv.DictReader(handle))


def start(path, fields):
    """Write the CSV header at `path` if the file does not exist yet (before processes append to it)."""
    if not path.exists():
        with path.open("w", newline="") as handle:
            csv.DictWriter(handle, fields).writeheader()


def append(path, fields, row):
    """Append `row` to the CSV at `path` at once, writing the header first for a new file."""
    start(path, fields)
    with path.open("a", newline="") as handle:
        csv.DictWriter(handle, fields).writerow(row)
