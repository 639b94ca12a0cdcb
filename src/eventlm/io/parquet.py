"""Parquet files: the event model as Arrow columns (``particles`` a list of structs), plus extras.

Written with ``pyarrow.parquet.ParquetWriter``, one row group per written chunk, so a file can be
written and read chunk by chunk (``iter_batches``) with bounded memory. Extra columns are top-level
columns beside the event fields and come back as extra event fields.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import awkward as ak

import numpy as np

from eventlm.errors import EventFormatError
from eventlm.events import EVENT_FIELDS, PARTICLE_FIELDS, canonical


class ParquetSink:
    """Streaming Parquet writer used by :class:`eventlm.io.EventWriter`."""

    def __init__(self, path: Path):
        self.path = path
        self._writer = None
        self._file = None  # ours to close, also when pyarrow's close fails (a full disk)

    def write(self, events: ak.Array, extra: dict) -> None:
        import pyarrow.parquet as pq

        for name, values in extra.items():
            events = ak.with_field(events, values, name)
        table = ak.to_arrow_table(ak.to_packed(events), extensionarray=True)
        if self._writer is None:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            self._writer = pq.ParquetWriter(self._file, table.schema, compression="zstd")
        elif table.schema != self._writer.schema:
            table = table.cast(self._writer.schema)
        self._writer.write_table(table)

    def close(self) -> None:
        try:
            if self._writer is None:
                from eventlm.events import empty_events

                self.write(empty_events(), {})  # nothing was written: an empty file with the schema
            self._writer.close()
        finally:
            if self._file is not None:
                self._file.close()


def iter_parquet(path, *, step_size: int, on_error: str = "raise", report=None) -> Iterator[ak.Array]:
    """Yield the events of a Parquet file, ``step_size`` rows at a time.

    Accepts what pyarrow, pandas and polars write: 32- or 64-bit list offsets, string or large_string
    labels, nullable columns, wider numeric types (cast to the event model's; an integer that does
    not fit, e.g. a kind of 300, is an error, never wrapped around). A null (an event field, a
    particle list or one particle value) makes the row a bad entry: an error, or with
    ``on_error="skip"`` a reported skip. The other checks are the physics-sanity policy's
    (:mod:`eventlm.sanity`), applied by :func:`eventlm.io.iter_events`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a file that is not Parquet
        raise EventFormatError(path, f"not a readable Parquet file ({type(err).__name__}: {err})") from None
    _check_schema(path, schema)
    native = _written_by_awkward(schema)
    entry0 = 0
    for batch in pf.iter_batches(batch_size=step_size):
        n = batch.num_rows
        if native:  # eventlm's own files: awkward's types, no nulls
            yield canonical(_drop_options(ak.from_arrow(batch)))
            entry0 += n
            continue
        bad = _null_entries(batch)
        if bad is not None:
            for i in np.flatnonzero(bad):
                problem = _null_problem(batch, int(i))
                if on_error != "skip":
                    raise EventFormatError(path, problem, entry=entry0 + int(i))
                if report is not None:
                    report.add(path, problem, entry=entry0 + int(i))
            batch = batch.filter(pa.array(~bad))
        yield _to_events(path, batch)
        entry0 += n


def _written_by_awkward(schema) -> bool:
    import pyarrow as pa

    return any(isinstance(schema.field(name).type, pa.ExtensionType) for name in (*EVENT_FIELDS, "particles"))


def _plain(type_):
    """An Arrow type without awkward's extension wrappers (for the schema check only)."""
    import pyarrow as pa

    if isinstance(type_, pa.ExtensionType):
        type_ = type_.storage_type
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        maker = pa.list_ if pa.types.is_list(type_) else pa.large_list
        return maker(_plain(type_.value_type))
    if pa.types.is_struct(type_):
        return pa.struct([pa.field(type_.field(i).name, _plain(type_.field(i).type)) for i in range(type_.num_fields)])
    return type_


def _check_schema(path, schema) -> None:
    import pyarrow as pa

    schema = pa.schema([pa.field(f.name, _plain(f.type)) for f in schema])

    names = schema.names
    missing = [f for f in (*EVENT_FIELDS, "particles") if f not in names]
    if missing:
        raise EventFormatError(path, f"missing columns {', '.join(missing)}")
    numeric = {name: pa.types.is_integer if dtype.startswith("int") else _is_number
               for name, dtype in {**EVENT_FIELDS, **PARTICLE_FIELDS}.items() if dtype != "string"}
    for name in EVENT_FIELDS:
        type_ = schema.field(name).type
        ok = _is_text(type_) if name == "process" else numeric[name](type_)
        if not ok:
            raise EventFormatError(path, f"column {name!r} has type {type_}, expected {EVENT_FIELDS[name]}")
    parts = schema.field("particles").type
    if not (pa.types.is_list(parts) or pa.types.is_large_list(parts)) or not pa.types.is_struct(parts.value_type):
        raise EventFormatError(path, f"column 'particles' has type {parts}, expected a list of structs")
    item = parts.value_type
    have = {item.field(i).name: item.field(i).type for i in range(item.num_fields)}
    lacking = [f for f in PARTICLE_FIELDS if f not in have]
    if lacking:
        raise EventFormatError(path, f"'particles' lack the fields {', '.join(lacking)}")
    for name in PARTICLE_FIELDS:
        if not numeric[name](have[name]):
            raise EventFormatError(path, f"particles.{name} has type {have[name]}, expected {PARTICLE_FIELDS[name]}")


def _is_number(type_) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(type_) or pa.types.is_floating(type_)


def _is_text(type_) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def _null_mask(array) -> np.ndarray:
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _particle_children(parts) -> tuple[np.ndarray, dict]:
    """``(event of each particle, {field: child array})`` of a list<struct> column (nulls merged)."""
    import pyarrow.compute as pc

    values = pc.list_flatten(parts)
    parents = np.asarray(pc.list_parent_indices(parts).to_numpy(zero_copy_only=False), dtype=np.int64)
    children = dict(zip([values.type.field(i).name for i in range(values.type.num_fields)], values.flatten()))
    return parents, children


def _null_entries(batch) -> np.ndarray | None:
    """Rows with a null anywhere in the event model (None when there is none)."""
    bad = np.zeros(batch.num_rows, dtype=bool)
    found = False
    for name in EVENT_FIELDS:
        column = batch.column(name)
        if column.null_count:
            bad |= _null_mask(column)
            found = True
    parts = batch.column("particles")
    if parts.null_count:
        bad |= _null_mask(parts)
        found = True
    parents, children = _particle_children(parts)
    for name in PARTICLE_FIELDS:
        child = children[name]
        if child.null_count:
            bad[parents[_null_mask(child)]] = True
            found = True
    return bad if found else None


def _null_problem(batch, i: int) -> str:
    row = batch.slice(i, 1)
    for name in EVENT_FIELDS:
        if row.column(name).null_count:
            return f"null {name}"
    parts = row.column("particles")
    if parts.null_count:
        return "null particle list"
    _, children = _particle_children(parts)
    for name in PARTICLE_FIELDS:
        if children[name].null_count:
            k = int(np.flatnonzero(_null_mask(children[name]))[0]) + 1
            return f"particle {k}: null {name}"
    return "null value"  # pragma: no cover


def _cast(path, name: str, array, dtype: str):
    import pyarrow as pa

    target = {"int8": pa.int8(), "int64": pa.int64(), "float32": pa.float32(), "float64": pa.float64()}[dtype]
    try:  # integers must fit (a kind of 300 is not kind 44); floats beyond float32 become inf, rejected later
        return array.cast(target, safe=dtype.startswith("int"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise EventFormatError(path, f"{name} does not fit {dtype} ({err})") from None


def _to_events(path, batch) -> ak.Array:
    """The event model (plus extra columns) from a null-free record batch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = {}
    for name, dtype in EVENT_FIELDS.items():
        column = batch.column(name)
        if name == "process":
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            columns[name] = column.cast(pa.large_string())
        else:
            columns[name] = _cast(path, name, column, dtype)
    parts = batch.column("particles")
    _, children = _particle_children(parts)
    lengths = np.asarray(pc.list_value_length(parts).to_numpy(zero_copy_only=False), dtype=np.int64)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = [_cast(path, f"particles.{name}", children[name], dtype) for name, dtype in PARTICLE_FIELDS.items()]
    item = pa.struct([pa.field(name, a.type, nullable=False) for name, a in zip(PARTICLE_FIELDS, flat)])
    list_type = pa.large_list(pa.field("item", item, nullable=False))
    columns["particles"] = pa.LargeListArray.from_arrays(
        pa.array(offsets), pa.StructArray.from_arrays(flat, fields=list(item)), type=list_type)
    extras = [name for name in batch.schema.names if name not in columns]
    names = [*EVENT_FIELDS, "particles"]
    table = pa.Table.from_arrays([columns[name] for name in names], schema=pa.schema(
        [pa.field(name, columns[name].type, nullable=False) for name in names]))
    arrays = _drop_options(ak.from_arrow(table))
    events = canonical(arrays)
    for name in extras:
        column = batch.column(name)
        values = ak.from_arrow(column)
        if not column.null_count:
            values = _drop_options(values)
        events = ak.with_field(events, values, name)
    return events


def _drop_options(arrays: ak.Array) -> ak.Array:
    """Arrow columns are nullable; a null-free column loses its option type (nothing is dropped)."""
    return ak.drop_none(arrays) if "?" in str(arrays.type) else arrays
