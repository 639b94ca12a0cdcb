"""All formats together: CSV -> ROOT -> Parquet -> CSV, Parquet extras, format detection."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from conftest import assert_same_events, random_events

from eventlm.errors import EventFormatError
from eventlm.io import iter_events, read_events, write_events


def test_csv_root_parquet_csv_round_trip(tmp_path):
    events = ak.concatenate([random_events(400, seed=11), random_events(100, seed=12, process="tttt_H500", start_id=400)])
    csv = write_events(events, tmp_path / "a.csv.gz")
    root = write_events(read_events(csv), tmp_path / "b.root")
    parquet = write_events(read_events(root), tmp_path / "c.parquet")
    back = read_events(write_events(read_events(parquet), tmp_path / "d.csv"))
    assert_same_events(events, back)


def test_parquet_extra_columns_round_trip_and_stream(tmp_path):
    events = random_events(300, seed=2)
    extra = {
        "anomaly_score": np.arange(300, dtype=np.float32),
        "token_nll": ak.values_astype(events.particles.eta, np.float32),
    }
    path = write_events(events, tmp_path / "s.parquet", extra_columns=extra)
    back = read_events(path)
    assert_same_events(events, back)
    assert back.fields[-2:] == ["anomaly_score", "token_nll"]
    assert ak.all(back.token_nll == extra["token_nll"])
    chunks = list(iter_events(path, step_size=50))
    assert max(map(len, chunks)) <= 50
    assert_same_events(events, ak.concatenate(chunks))
    # written events that carry extra fields write them again
    again = read_events(write_events(back, tmp_path / "again.root"))
    np.testing.assert_array_equal(again.anomaly_score.to_numpy(), extra["anomaly_score"])


def test_parquet_without_event_fields_raises(tmp_path):
    path = tmp_path / "other.parquet"
    ak.to_parquet(ak.Array({"x": [1, 2, 3]}), path)
    with pytest.raises(EventFormatError, match="missing columns"):
        read_events(path)


@pytest.mark.parametrize("name", ["events.txt", "events.json", "events"])
def test_unknown_suffix_raises(tmp_path, name):
    path = tmp_path / name
    path.write_text("x")
    with pytest.raises(EventFormatError, match="unknown file format"):
        read_events(path)
    with pytest.raises(EventFormatError, match="unknown file format"):
        write_events(random_events(2), tmp_path / f"out-{name}")


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_events(tmp_path / "nope.csv")


def test_max_events_spans_files(tmp_path):
    a = write_events(random_events(30), tmp_path / "a.root")
    b = write_events(random_events(30, seed=1, start_id=30), tmp_path / "b.parquet")
    got = read_events([a, b], max_events=45, step_size=7)
    assert got.event_id.tolist() == list(range(45))


def test_top_level_package_reexports_io():
    import eventlm
    import eventlm.io

    assert eventlm.read_events is eventlm.io.read_events
    assert eventlm.write_events is eventlm.io.write_events
    assert eventlm.iter_events is eventlm.io.iter_events


@pytest.mark.parametrize("suffix", [".csv", ".root", ".parquet"])
def test_write_events_refuses_unknown_options_for_every_format(suffix, tmp_path):
    """Regression: ``write_events(..., compression=...)`` raised TypeError for ROOT only and was
    silently ignored for CSV and Parquet; every format now refuses it, and nothing is written."""
    with pytest.raises(TypeError):
        write_events(random_events(5), tmp_path / f"x{suffix}", compression="zstd")
    assert list(tmp_path.iterdir()) == []
