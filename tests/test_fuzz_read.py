"""Fuzzing ``read_events`` (issue 13): random bytes and random mutations (bit flips, truncation, byte
insertion) of small valid CSV, ROOT and Parquet files either give valid events (the event model's
shape, finite values) or raise EventFormatError, never anything else. Bounded and derandomized, so
CI is reproducible and fast."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventlm.errors import EventFormatError
from eventlm.events import EVENT_FIELDS, PARTICLE_FIELDS
from eventlm.io import read_events, write_events

FUZZ = settings(max_examples=40, deadline=2000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SUFFIXES = ("csv", "csv.gz", "root", "parquet")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    from conftest import random_events

    d = tmp_path_factory.mktemp("fuzz")
    events = random_events(8, seed=2, max_particles=4)
    return {s: write_events(events, d / f"valid.{s}").read_bytes() for s in SUFFIXES}


def assert_valid(events: ak.Array) -> None:
    assert set(EVENT_FIELDS) | {"particles"} <= set(events.fields)
    for name in ("met", "met_phi", "weight"):
        assert np.isfinite(ak.to_numpy(events[name])).all()
    for name in PARTICLE_FIELDS:
        values = ak.to_numpy(ak.flatten(events.particles[name]))
        assert values.dtype == np.dtype(PARTICLE_FIELDS[name])
        if values.dtype.kind == "f":
            assert np.isfinite(values).all()
    assert (ak.to_numpy(events.met) >= 0).all()


def read_or_format_error(path) -> None:
    try:
        events = read_events(path)
    except EventFormatError:
        return
    assert_valid(events)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.integers(0, 255)),
)


def mutate(data: bytes, steps) -> bytes:
    buf = bytearray(data)
    for kind, where, value in steps:
        if not buf:
            break
        i = where % len(buf)
        if kind == "flip":
            buf[i] ^= 1 << value
        elif kind == "cut":
            del buf[i:]
        else:
            buf.insert(i, value)
    return bytes(buf)


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), steps=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_files_give_events_or_format_error(originals, tmp_path, suffix, steps):
    path = tmp_path / f"mutant.{suffix}"
    path.write_bytes(mutate(originals[suffix], steps))
    read_or_format_error(path)


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), data=st.binary(min_size=0, max_size=2048))
def test_random_bytes_give_events_or_format_error(tmp_path, suffix, data):
    path = tmp_path / f"random.{suffix}"
    path.write_bytes(data)
    read_or_format_error(path)


@FUZZ
@given(lines=st.lists(st.text(alphabet="0123456789;,.-+eE jbgm\n", max_size=60), max_size=6))
def test_csv_like_text_gives_events_or_format_error(tmp_path, lines):
    path = tmp_path / "text.csv"
    path.write_text("\n".join(lines))
    read_or_format_error(path)
