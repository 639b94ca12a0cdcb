"""Fuzzing ``read_events`` (issue 13): random bytes and random mutations (bit flips, truncation, byte
insertion) of small valid CSV, ROOT and Parquet files, of a small NanoAOD and of a real PHYSLITE file
either give valid events (the event model's shape, finite values) or raise EventFormatError, never
anything else; a model directory with one mutated file scores or gives the one-line error (issue 24).
Bounded and derandomized, so CI is reproducible and fast."""

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


@pytest.fixture(scope="module")
def small_nanoaod(tmp_path_factory):
    """Six events of real CMS NanoAOD with only the branches the reader reads, uncompressed (a
    mutation lands in values and structure, not in a compressed basket only)."""
    import uproot

    from conftest import real_file

    from eventlm.io.nanoaod import NanoAODOptions, _fields_from_keys, _Plan

    with uproot.open(real_file("nano_dy.root")) as f:
        tree = f["Events"]
        fields, top = _fields_from_keys(tree.keys())
        keep = _Plan(fields, top, NanoAODOptions(), "fuzz").branches()
        arrays = tree.arrays(keep, entry_stop=6)
    path = tmp_path_factory.mktemp("nano") / "nano.root"
    with uproot.recreate(path, compression=None) as out:
        out.mktree("Events", {k: arrays[k].type.content for k in keep}, counter_name=lambda c: "n" + c.split("_")[0])
        out["Events"].extend({k: arrays[k] for k in keep})
    assert len(read_events(path)) == 6
    return path.read_bytes()


@settings(FUZZ, max_examples=25, deadline=None)  # a loaded CI machine: whole reads
@given(steps=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_nanoaod_gives_events_or_format_error(small_nanoaod, tmp_path, steps):
    path = tmp_path / "mutant_nano.root"
    path.write_bytes(mutate(small_nanoaod, steps))
    read_or_format_error(path)


@settings(FUZZ, max_examples=4, deadline=None)
@given(steps=st.lists(st.tuples(st.just("flip"), st.integers(0, 1 << 21), st.integers(0, 7)), min_size=1,
                      max_size=3))
def test_mutated_physlite_gives_events_or_format_error(tmp_path, steps):
    """Bit flips anywhere in a real PHYSLITE file (a cut or an insertion fails at the header: cheap,
    and covered above); each example reads the whole file, so few."""
    from conftest import real_file

    path = tmp_path / "mutant_physlite.root"
    path.write_bytes(mutate(real_file("PHYSLITE_example.root").read_bytes(), steps))
    read_or_format_error(path)


@pytest.fixture(scope="module")
def fuzz_model(tmp_path_factory):
    """A tiny model directory as `eventlm train` writes it (calibration included) and an input."""
    from conftest import random_events, trained_model

    from eventlm.apply import calibrate
    from eventlm.config import RunConfig

    events = random_events(200, seed=3)
    config = RunConfig(seed=1).replace(model={"n_embd": 16, "n_head": 2, "n_layer": 1},
                                       train={"objective": "causal", "epochs": 1, "batch_size": 64})
    model = trained_model(tmp_path_factory, config, events)
    calibrate(model, events)
    return model, write_events(events[:20], model.parent / "in.parquet")


MODEL_FILES = ("tokenizer.json", "calibration.json", "config.toml", "split.json", "best.pt")


@settings(FUZZ, max_examples=20, deadline=None)
@given(name=st.sampled_from(MODEL_FILES), steps=st.lists(mutation, min_size=1, max_size=3))
def test_model_directory_with_a_mutated_file_scores_or_says_one_line(fuzz_model, tmp_path, capsys, name, steps):
    """`eventlm score` either scores (finite scores) or exits 2 with one line: never a traceback."""
    import shutil

    from eventlm.cli import main

    model, inputs = fuzz_model
    copy = shutil.copytree(model, tmp_path / "m", dirs_exist_ok=True)
    (copy / name).write_bytes(mutate((model / name).read_bytes(), steps))
    out = tmp_path / "o.parquet"
    out.unlink(missing_ok=True)
    code = main(["score", str(inputs), "--model", str(copy), "-o", str(out), "--no-progress"])
    err = capsys.readouterr().err
    if code == 0:
        assert np.isfinite(ak.to_numpy(read_events(out).anomaly_score)).all()
    else:
        lines = [line for line in err.splitlines() if line.startswith("eventlm ")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert not out.exists()
