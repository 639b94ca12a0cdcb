"""Hostile and clumsy input files (issue 13): one line naming the file, the line or entry and the
problem, exit status 2, no traceback; ``--on-error skip`` drops exactly the bad events and says where;
the physics-sanity policy is the same for every reader and command."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import awkward as ak
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uproot

from eventlm.cli import main
from conftest import one_error

from eventlm.errors import EventFormatError
from eventlm.io import read_events, write_events

GOOD = "1;ttbar;1;50000;0.1;j,100000,50000,0.5,0.1;"
GOOD3 = "3;ttbar;1;50000;0.1;j,100000,50000,0.5,0.1;"


def csv_with(tmp_path, bad_line, name="bad.csv") -> str:
    path = tmp_path / name
    path.write_bytes(b"\n".join([GOOD.encode(), bad_line if isinstance(bad_line, bytes) else bad_line.encode(),
                                 GOOD3.encode()]) + b"\n")
    return str(path)


# ---- the physics-sanity policy, through the CSV reader -------------------------------------------

POLICY = [
    ("eta_overflows_float32", "2;ttbar;1;50000;0.1;j,100000,50000,1e39,0.1;", "eta is inf"),
    ("pt_overflows_float32", "2;ttbar;1;50000;0.1;j,1e45,1e42,0.5,0.1;", "pt is inf"),
    ("negative_met", "2;ttbar;1;-50000;0.1;j,100000,50000,0.5,0.1;", "MET is negative"),
    ("negative_pt", "2;ttbar;1;50000;0.1;j,100000,-50000,0.5,0.1;", "negative pt"),
    ("negative_energy", "2;ttbar;1;50000;0.1;j,-100000,50000,0.5,0.1;", "negative E"),
    ("huge_eta", "2;ttbar;1;50000;0.1;j,100000,50000,1e30,0.1;", "|eta| = 1e+30 beyond 10"),
]


@pytest.mark.parametrize("name,line,problem", POLICY, ids=[p[0] for p in POLICY])
def test_policy_rejects_with_file_line_and_problem(tmp_path, capsys, name, line, problem):
    path = csv_with(tmp_path, line)
    one_error(capsys, ["info", path], path, "line 2", problem)
    one_error(capsys, ["convert", path, str(tmp_path / "out.root")], path, "line 2", problem)
    assert not (tmp_path / "out.root").exists()


@pytest.mark.parametrize("name,line,problem", POLICY, ids=[p[0] for p in POLICY])
def test_policy_skip_reports_count_and_position(tmp_path, name, line, problem):
    events, report = read_events(csv_with(tmp_path, line), on_error="skip", return_report=True)
    assert events.event_id.tolist() == [1, 3]  # nothing else lost, order kept
    assert report.lines() == [2] and problem in report.skipped[0].problem


def test_legal_negative_eta_and_phi_are_not_bad(tmp_path):
    path = csv_with(tmp_path, "2;ttbar;1;50000;-3.1;j,100000,50000,-2.5,-3.1;e-,20000,10000,-1.2,-0.3;")
    events = read_events(path)
    assert events.event_id.tolist() == [1, 2, 3]
    assert float(events.particles.eta[1][0]) == pytest.approx(-2.5)


def test_policy_is_the_same_for_root_and_parquet(tmp_path, make_events, capsys):
    events = make_events(20, seed=3)
    pt = ak.to_numpy(ak.flatten(events.particles.pt)).copy()
    counts = ak.to_numpy(ak.num(events.particles))
    target = int(np.flatnonzero(counts > 0)[2])  # the third event with particles gets a negative pT
    pt[int(counts[:target].sum())] = -5.0
    from eventlm.events import make_events as build, make_particles

    p = events.particles
    flat = {f: ak.to_numpy(ak.flatten(p[f])) for f in ("kind", "charge", "eta", "phi", "E")}
    parts = make_particles(flat["kind"], flat["charge"], pt, flat["eta"], flat["phi"], flat["E"], counts)
    bad = build(event_id=events.event_id, process=events.process, weight=events.weight, met=events.met,
                met_phi=events.met_phi, particles=parts)
    for suffix in ("root", "parquet"):
        path = write_events(bad, tmp_path / f"bad.{suffix}")
        one_error(capsys, ["info", str(path)], str(path), f"entry {target}", "negative pt")
        kept, report = read_events(path, on_error="skip", return_report=True)
        assert report.entries() == [target]
        assert kept.event_id.tolist() == [i for i in events.event_id.tolist() if i != target]


def test_charge_not_matching_kind_is_rejected(tmp_path, make_events):
    from eventlm.events import make_events as build, make_particles

    parts = make_particles([2, 0], [0, 0], [30, 40], [0.1, 0.2], [0.1, 0.2], [31, 41], [1, 1])
    events = build(event_id=[0, 1], process="x", weight=[1, 1], met=[10, 10], met_phi=[0, 0], particles=parts)
    path = write_events(events, tmp_path / "q.parquet")
    with pytest.raises(EventFormatError, match=r"entry 0: particle 1 \(electron\): charge 0"):
        read_events(path)
    assert read_events(path, on_error="skip").event_id.tolist() == [1]


def test_nanoaod_electron_with_charge_zero_and_nan_met(tmp_path):
    path = tmp_path / "nano.root"
    n = 3
    data = {
        "MET_pt": np.array([30, np.nan, 40], np.float32), "MET_phi": np.zeros(n, np.float32),
        "event": np.arange(n, dtype=np.int64),
        "Jet": ak.zip({"pt": [[50.0]] * n, "eta": [[0.1]] * n, "phi": [[0.2]] * n, "btagDeepFlavB": [[0.1]] * n}),
        "Electron": ak.zip({"pt": [[30.0], [], [30.0]], "eta": [[0.1], [], [0.1]], "phi": [[0.1], [], [0.1]],
                            "charge": [[-1], [], [0]]}),
        "Muon": ak.zip({"pt": [[25.0]] * n, "eta": [[0.1]] * n, "phi": [[0.1]] * n, "charge": [[1]] * n}),
        "Photon": ak.zip({"pt": [[]] * n, "eta": [[]] * n, "phi": [[]] * n}),
    }
    data = {k: ak.values_astype(v, np.float32) if k in ("Jet", "Photon") else v for k, v in data.items()}
    with uproot.recreate(path) as f:
        f.mktree("Events", {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in data.items()})
        f["Events"].extend(data)
    from eventlm.io.nanoaod import NanoAODOptions

    no_jet_id = NanoAODOptions(jet_id=None)  # the hand-made file has no Jet_jetId (an error otherwise)
    with pytest.raises(EventFormatError, match=r"nano.root, entry 1: MET is nan"):
        read_events(path, nanoaod=no_jet_id)
    events, report = read_events(path, on_error="skip", return_report=True, nanoaod=no_jet_id)
    assert events.event_id.tolist() == [0]
    assert report.entries() == [1, 2]
    assert "charge 0" in report.skipped[1].problem


def test_process_label_not_utf8_also_with_skip(tmp_path, capsys):
    path = csv_with(tmp_path, b"2;tt\xff\xfebar;1;50000;0.1;j,100000,50000,0.5,0.1;")
    one_error(capsys, ["info", path], path, "line 2", "not valid UTF-8")
    assert main(["info", "--on-error", "skip", path]) == 0
    out = capsys.readouterr().out
    assert "2 events (1 bad lines/entries skipped)" in out


def test_duplicate_event_ids_warned_by_every_reader(tmp_path, caplog, make_events):
    events = make_events(10)
    events = ak.with_field(events, np.array([0, 1, 2, 3, 4, 5, 6, 2, 8, 9]), "event_id")
    for suffix in ("csv", "root", "parquet"):
        path = write_events(events, tmp_path / f"dup.{suffix}")
        caplog.clear()
        assert len(read_events(path)) == 10  # warned, never dropped
        warned = [r.getMessage() for r in caplog.records if "repeat an event id" in r.getMessage()]
        assert len(warned) == 1 and str(path) in warned[0] and "event_id 2" in warned[0]


# ---- files that are not event files ----------------------------------------------------------------


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("empty.csv", b"", "empty file"),
    ("junk.root", b"this is not ROOT", "not a readable ROOT file"),
])
def test_a_file_that_holds_no_events_is_an_error(tmp_path, name, content, problem):
    from eventlm.errors import EventFormatError
    from eventlm.io import read_events

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(EventFormatError, match=problem) as err:
        read_events(path)
    assert str(path) in str(err.value)


def test_directory_as_input(tmp_path, capsys):
    d = tmp_path / "events.csv"
    d.mkdir()
    for argv in (["info", str(d)], ["convert", str(d), str(tmp_path / "o.root")]):
        one_error(capsys, argv, str(d), "is a directory")
    with pytest.raises(EventFormatError, match="is a directory"):
        read_events(d)


@pytest.mark.parametrize("cut", ["half", "last300"])
def test_truncated_root_file(tmp_path, make_events, capsys, cut):
    good = write_events(make_events(3000), tmp_path / "good.root")
    data = good.read_bytes()
    path = tmp_path / "cut.root"
    path.write_bytes(data[: len(data) // 2] if cut == "half" else data[:-300])
    for argv in (["info", str(path)], ["info", "--on-error", "skip", str(path)],
                 ["convert", str(path), str(tmp_path / "o.parquet")],
                 ["convert", "--on-error", "skip", str(path), str(tmp_path / "o.parquet")]):
        one_error(capsys, argv, str(path))
    assert not (tmp_path / "o.parquet").exists()
    with pytest.raises(EventFormatError, match="cut.root"):
        read_events(path)


def test_histogram_named_events(tmp_path, capsys):
    path = tmp_path / "hist.root"
    with uproot.recreate(path) as f:
        f["Events"] = np.histogram(np.arange(10.0))
    one_error(capsys, ["info", str(path)], str(path), "'Events' is a TH1D, not a TTree")


def test_zero_entry_root_to_csv_reads_back(tmp_path, make_events, capsys):
    root = write_events(make_events(0), tmp_path / "zero.root")
    for suffix in ("csv", "csv.gz"):
        out = tmp_path / f"zero.{suffix}"
        assert main(["convert", str(root), str(out)]) == 0
        assert main(["info", str(out)]) == 0
        assert f"{out}: 0 events" in capsys.readouterr().out


# ---- Parquet written by other tools ----------------------------------------------------------------


def _rows(n=3):
    return [dict(event_id=i, process="ttbar", weight=1.0, met=50.0, met_phi=0.1,
                 particles=[dict(kind=0, charge=0, pt=50.0 + i, eta=0.5, phi=0.1, E=60.0 + i)] * 2) for i in range(n)]


def test_parquet_with_32bit_offsets_is_accepted(tmp_path):
    table = pa.Table.from_pylist(_rows())
    assert pa.types.is_list(table.schema.field("particles").type)  # pyarrow's default: 32-bit offsets
    pq.write_table(table, tmp_path / "p.parquet")
    events = read_events(tmp_path / "p.parquet")
    assert events.event_id.tolist() == [0, 1, 2]
    assert events.particles.pt.tolist() == [[50.0, 50.0], [51.0, 51.0], [52.0, 52.0]]
    assert str(events.particles.type.content).startswith("var * Momentum4D[kind: int8")


@pytest.mark.parametrize("where,problem", [("pt", "entry 1: particle 1: null pt"),
                                           ("list", "entry 1: null particle list"),
                                           ("met", "entry 1: null met")])
def test_parquet_nulls_are_bad_entries(tmp_path, capsys, where, problem):
    rows = _rows()
    if where == "pt":
        rows[1]["particles"] = [dict(rows[1]["particles"][0], pt=None)]
    elif where == "list":
        rows[1]["particles"] = None
    else:
        rows[1]["met"] = None
    path = tmp_path / "n.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    one_error(capsys, ["info", str(path)], str(path), problem)
    events, report = read_events(path, on_error="skip", return_report=True)
    assert events.event_id.tolist() == [0, 2] and report.entries() == [1]


def test_parquet_particles_missing_a_field(tmp_path, capsys):
    rows = [dict(r, particles=[{k: v for k, v in p.items() if k != "eta"} for p in r["particles"]]) for r in _rows()]
    path = tmp_path / "noeta.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    one_error(capsys, ["info", str(path)], str(path), "'particles' lack the fields eta")


# ---- outputs ---------------------------------------------------------------------------------------


def test_output_is_a_directory_or_unwritable(tmp_path, make_events, capsys):
    src = write_events(make_events(5), tmp_path / "in.parquet")
    (tmp_path / "out.root").mkdir()
    one_error(capsys, ["convert", str(src), str(tmp_path / "out.root")], "out.root", "output is a directory")
    one_error(capsys, ["convert", str(src), str(tmp_path / "no" / "x.root")], "x.root", "does not exist")


def test_step_size_zero_is_refused(tmp_path, make_events, capsys):
    src = write_events(make_events(5), tmp_path / "in.parquet")
    with pytest.raises(SystemExit) as exit_:
        main(["convert", "--step-size", "0", str(src), str(tmp_path / "o.root")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "--step-size" in err and "positive" in err


def test_overwritten_file_keeps_its_mode(tmp_path, make_events):
    path = write_events(make_events(5), tmp_path / "e.parquet")
    path.chmod(0o640)
    write_events(make_events(6), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert len(read_events(path)) == 6


def test_sigterm_removes_the_temporary_file(tmp_path, make_events):
    """SIGTERM during a convert leaves neither the output nor a hidden temporary file."""
    import signal
    import time

    src = write_events(make_events(30_000, max_particles=20), tmp_path / "big.csv")
    out = tmp_path / "out" / "o.root"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "eventlm", "convert", "--step-size", "100", str(src), str(out)],
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not any(out.parent.iterdir()):  # the temporary file exists
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert list(out.parent.iterdir()) == []


def test_label_that_csv_cannot_hold(tmp_path, make_events, capsys):
    src = write_events(make_events(5, process="tt,bar"), tmp_path / "in.root")
    assert read_events(src).process.tolist()[0] == "tt,bar"  # ROOT holds any label
    out = tmp_path / "o.csv"
    one_error(capsys, ["convert", str(src), str(out)], "o.csv", "contain no ';', ','")
    assert not out.exists() and list(tmp_path.iterdir()) == [src]
