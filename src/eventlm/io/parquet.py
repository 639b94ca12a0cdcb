"""Parquet files: the event model as Arrow columns (``particles`` a list of structs), plus extras.

Written with ``pyarrow.parquet.ParquetWriter``, one row group per written chunk, so a file can be
written and read chunk by chunk (``iter_batches``) with bounded memory. Extra columns are top-level
columns beside the event fields and come back as extra event fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import awkward as ak

from eventlm.errors import EventFormatError
from eventlm.events import EVENT_FIELDS, canonical


class ParquetSink:
    """Streaming Parquet writer used by :class:`eventlm.io.EventWriter`."""

    def __init__(self, path: Path):
        self.path = path
        self._writer = None

    def write(self, events: ak.Array, extra: dict) -> None:
        import pyarrow.parquet as pq

        for name, values in extra.items():
            events = ak.with_field(events, values, name)
        table = ak.to_arrow_table(ak.to_packed(events), extensionarray=True)
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        elif table.schema != self._writer.schema:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        if self._writer is None:
            from eventlm.events import empty_events

            self.write(empty_events(), {})  # nothing was written: an empty file with the schema
        self._writer.close()


def iter_parquet(path, *, step_size: int, on_error: str = "raise", report=None) -> Iterator[ak.Array]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from eventlm.io.root import _check_entries

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise EventFormatError(path, f"not a readable Parquet file ({err})") from None
    names = pf.schema_arrow.names
    missing = [f for f in (*EVENT_FIELDS, "particles") if f not in names]
    if missing:
        raise EventFormatError(path, f"missing columns {', '.join(missing)}")
    entry0 = 0
    for batch in pf.iter_batches(batch_size=step_size):
        arrays = ak.from_arrow(batch)
        events = canonical(_drop_options(arrays))
        events = _check_entries(events, path, entry0, on_error, report)
        entry0 += batch.num_rows
        yield events


def _drop_options(arrays: ak.Array) -> ak.Array:
    """Arrow columns are nullable; ours never hold nulls (a null would be a bad file)."""
    return ak.drop_none(arrays) if "?" in str(arrays.type) else arrays
