"""ROOT ntuples: uproot/coffea/ROOT read-back, extra columns, process names, NanoAOD input, bad files."""

from __future__ import annotations

import warnings

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import assert_same_events, random_events

from eventlm.errors import EventFormatError
from eventlm.events import process_code
from eventlm.io import ReadReport, iter_events, read_events, write_events
from eventlm.io.root import read_process_names


@pytest.fixture
def mixed_events():
    return ak.concatenate([
        random_events(400, seed=1, process="ttbar"),
        random_events(250, seed=2, process="gluino_1000", start_id=400),
    ])


@pytest.fixture
def ntuple(tmp_path, mixed_events):
    n = len(mixed_events)
    extra = {
        "anomaly_score": np.linspace(0, 1, n, dtype=np.float32),
        "token_nll": ak.values_astype(mixed_events.particles.pt / 10.0, np.float32),
    }
    return write_events(mixed_events, tmp_path / "scores.root", extra_columns=extra), mixed_events, extra


def test_root_round_trip_keeps_events_labels_and_extras(ntuple):
    path, events, extra = ntuple
    back = read_events(path)
    assert_same_events(events, back)
    assert back.fields[-2:] == ["anomaly_score", "token_nll"]
    np.testing.assert_array_equal(back.anomaly_score.to_numpy(), extra["anomaly_score"])
    assert ak.all(back.token_nll == extra["token_nll"])
    assert read_process_names(path) == {process_code("ttbar"): "ttbar", process_code("gluino_1000"): "gluino_1000"}


def test_ntuple_branches_as_uproot_sees_them(ntuple):
    path, events, _ = ntuple
    with uproot.open(path) as f:
        tree = f["Events"]
        assert f.classnames()["Events;1"] == "TTree"
        for name in ("run", "luminosityBlock", "event", "weight", "process_code", "MET_pt", "MET_phi",
                     "nParticle", "Particle_kind", "Particle_charge", "Particle_pt", "Particle_eta",
                     "Particle_phi", "Particle_E", "anomaly_score", "token_nll"):
            assert name in tree.keys(), name
        assert tree["Particle_kind"].interpretation.content.from_dtype == np.dtype(">i1")
        arrays = tree.arrays(["event", "nParticle", "Particle_pt", "MET_pt", "run"])
    np.testing.assert_array_equal(arrays.event.to_numpy(), events.event_id.to_numpy())
    np.testing.assert_array_equal(arrays.nParticle.to_numpy(), ak.num(events.particles).to_numpy())
    np.testing.assert_allclose(ak.flatten(arrays.Particle_pt).to_numpy(), ak.flatten(events.particles.pt).to_numpy())
    assert set(arrays.run.to_numpy()) == {1}


@pytest.mark.parametrize("mode", ["eager", "virtual"])
def test_coffea_nanoevents_reads_the_ntuple(ntuple, mode):
    from coffea.nanoevents import NanoEventsFactory

    from eventlm.io.schema import EventlmNanoAODSchema

    path, events, extra = ntuple
    nano = NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=EventlmNanoAODSchema, mode=mode).events()
    assert {"Particle", "MET", "event", "run", "luminosityBlock", "weight", "anomaly", "token"} <= set(nano.fields)
    assert set(nano.Particle.fields) == {"kind", "charge", "pt", "eta", "phi", "E"}
    np.testing.assert_array_equal(ak.to_numpy(nano.event), events.event_id.to_numpy())
    np.testing.assert_allclose(ak.to_numpy(nano.MET.pt), events.met.to_numpy())
    assert ak.all(nano.Particle.pt == events.particles.pt)
    assert ak.all(nano.Particle.kind == events.particles.kind)
    np.testing.assert_array_equal(ak.to_numpy(nano.anomaly.score), extra["anomaly_score"])
    # four-vector behaviour on the objects (PtEtaPhiECandidate), mass as the event model computes it
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(nano.Particle.mass)),
                               ak.to_numpy(ak.flatten(events.particles.mass)), rtol=1e-3, atol=1e-2)
    two = nano.Particle[ak.num(nano.Particle) >= 2]
    pair = two[:, 0] + two[:, 1]
    assert ak.all(pair.mass > 0) and ak.all(two[:, 0].delta_r(two[:, 1]) > 0)


def test_plain_nanoaodschema_warns_and_has_no_four_vectors_which_the_eventlm_schema_gives(ntuple):
    """Regression: plain NanoAODSchema gives 16 RuntimeWarnings (CMS cross-references) on an eventlm
    ntuple and Particle without .mass; EventlmNanoAODSchema, the documented class, gives neither problem."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    from eventlm.io.schema import EventlmNanoAODSchema

    path = str(ntuple[0])
    with pytest.warns(RuntimeWarning, match="cross-reference"):
        plain = NanoEventsFactory.from_root({path: "Events"}, schemaclass=NanoAODSchema, mode="eager").events()
    assert "mass" not in dir(plain.Particle)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nano = NanoEventsFactory.from_root({path: "Events"}, schemaclass=EventlmNanoAODSchema, mode="eager").events()
        assert ak.all(np.isfinite(nano.Particle.mass))


def test_real_root_reads_the_ntuple(ntuple):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the ROOT wheel warns that it is an alpha release
        ROOT = pytest.importorskip("ROOT")
    path, events, _ = ntuple
    df = ROOT.RDataFrame("Events", str(path))
    assert df.Count().GetValue() == len(events)
    total = df.Define("sum_pt", "Sum(Particle_pt)").Sum("sum_pt").GetValue()
    assert total == pytest.approx(float(ak.sum(events.particles.pt)), rel=1e-5)
    assert df.Sum("nParticle").GetValue() == int(ak.sum(ak.num(events.particles)))
    assert ROOT.RDataFrame("ProcessNames", str(path)).Count().GetValue() == 2


def test_chunked_streaming_matches_read_events(ntuple):
    path, events, _ = ntuple
    chunks = list(iter_events(path, step_size=64))
    assert max(map(len, chunks)) <= 64
    assert_same_events(events, ak.concatenate(chunks))


def test_root_without_events_tree_raises(tmp_path):
    path = tmp_path / "other.root"
    with uproot.recreate(path) as f:
        f.mktree("Other", {"x": np.float32}).extend({"x": np.zeros(3, np.float32)})
    with pytest.raises(EventFormatError, match="no TTree 'Events'") as err:
        read_events(path)
    assert str(path) in str(err.value)


def test_root_missing_branches_raises(tmp_path):
    path = tmp_path / "partial.root"
    with uproot.recreate(path) as f:
        f.mktree("Events", {"event": np.int64, "Particle_pt": np.float32}).extend(
            {"event": np.arange(3), "Particle_pt": np.ones(3, np.float32)}
        )
    with pytest.raises(EventFormatError, match="lacks the branches .*weight"):
        read_events(path)


def test_bad_entries_raise_or_are_skipped(tmp_path):
    events = random_events(20)
    met = events.met.to_numpy().copy()
    met[5] = np.nan
    bad = ak.with_field(events, met, "met")
    path = write_events(bad, tmp_path / "nan.root")
    with pytest.raises(EventFormatError, match="entry 5"):
        read_events(path)
    back, report = read_events(path, on_error="skip", return_report=True)
    assert back.event_id.tolist() == [i for i in range(20) if i != 5]
    assert report.entries() == [5]


@pytest.mark.parametrize("suffix", [".root", ".parquet"])
def test_bad_particles_are_found_in_their_entries(tmp_path, suffix):
    events = random_events(40, seed=4)
    counts = ak.num(events.particles).to_numpy()
    events = events[counts > 0]
    starts = np.concatenate([[0], np.cumsum(ak.num(events.particles).to_numpy())])
    flat = {f: ak.flatten(events.particles[f]).to_numpy().copy() for f in ("kind", "pt", "eta")}
    flat["pt"][starts[3]] = np.inf
    flat["eta"][starts[11] + ak.num(events.particles)[11] - 1] = np.nan
    flat["kind"][starts[15]] = 9  # no such kind
    particles = events.particles
    for f, values in flat.items():
        particles = ak.with_field(particles, ak.unflatten(values, ak.num(events.particles)), f)
    path = write_events(ak.with_field(events, particles, "particles"), tmp_path / f"bad{suffix}")
    with pytest.raises(EventFormatError, match="entry 3"):
        read_events(path)
    back, report = read_events(path, on_error="skip", return_report=True)
    assert report.entries() == [3, 11, 15]
    assert back.event_id.tolist() == [e for i, e in enumerate(events.event_id.tolist()) if i not in (3, 11, 15)]


def test_particle_branches_that_disagree_on_counts_raise(tmp_path):
    path = tmp_path / "ragged.root"
    counts = np.array([2, 1, 3])
    other = np.array([2, 2, 3])  # Particle_pt has its own counter, and one more particle in entry 1
    parts = {f: ak.unflatten(np.ones(counts.sum(), dtype=t), counts)
             for f, t in (("kind", np.int8), ("charge", np.int8), ("eta", np.float32), ("phi", np.float32),
                          ("E", np.float32))}
    with uproot.recreate(path) as f:
        f.mktree("Events", {"event": np.int64, "weight": np.float64, "process_code": np.int32,
                            "MET_pt": np.float32, "MET_phi": np.float32, "Particle": ak.zip(parts).type.content,
                            "Particle_pt": ak.Array([[1.0]]).type.content}).extend({
            "event": np.arange(3), "weight": np.ones(3), "process_code": np.zeros(3, np.int32),
            "MET_pt": np.ones(3, np.float32), "MET_phi": np.zeros(3, np.float32), "Particle": ak.zip(parts),
            "Particle_pt": ak.unflatten(np.ones(other.sum()), other),
        })
    with pytest.raises(EventFormatError, match=r"entry 1: Particle_pt disagrees with Particle_kind"):
        read_events(path)


def test_process_codes_without_a_names_tree_read_as_their_number(tmp_path):
    events = random_events(5)
    path = write_events(events, tmp_path / "named.root")
    bare = tmp_path / "bare.root"
    with uproot.open(path) as src, uproot.recreate(bare) as dst:
        tree = src["Events"]
        arrays = tree.arrays(["event", "weight", "process_code", "MET_pt", "MET_phi"], library="np")
        parts = tree.arrays([b for b in tree.keys() if b.startswith("Particle_")])
        arrays["Particle"] = ak.zip({b.removeprefix("Particle_"): parts[b] for b in parts.fields})
        dst.mktree("Events", {k: (v.dtype if isinstance(v, np.ndarray) else v.type.content) for k, v in arrays.items()})
        dst["Events"].extend(arrays)
    back = read_events(bare)
    codes = uproot.open(path)["Events"]["process_code"].array(library="np")
    assert back.process.tolist() == [str(int(c)) for c in codes]
    assert_same_events(events, ak.with_field(back, events.process, "process"))


def test_write_failure_leaves_no_file_under_the_final_name(tmp_path):
    from eventlm.io import EventWriter

    final = tmp_path / "out.root"
    with pytest.raises(RuntimeError, match="scoring crashed"):
        with EventWriter(final) as out:
            out.write(random_events(50))
            raise RuntimeError("scoring crashed")
    assert list(tmp_path.iterdir()) == []
    # a failing write inside write_events (mismatched extra column) leaves nothing either
    with pytest.raises(ValueError, match="extra column"):
        write_events(random_events(5), final, extra_columns={"anomaly_score": np.zeros(4, np.float32)})
    assert list(tmp_path.iterdir()) == []


def test_regression_inputs_with_and_without_event_identity_into_one_output_are_one_line(tmp_path):
    """`eventlm score MODEL nano.root fixture.csv.gz -o out.root`: NanoAOD chunks carry run and lumi
    block, CSV chunks don't; that was a bare ValueError (a traceback), now one line naming the output
    and the columns, with nothing left under the final name."""
    from eventlm.errors import OutputError
    from eventlm.io import EventWriter

    final = tmp_path / "out.root"
    nano_like = ak.with_field(random_events(5), np.full(5, 315267, np.uint32), "run")
    with pytest.raises(OutputError, match=r"out\.root: its inputs differ in the columns run"):
        with EventWriter(final) as out:
            out.write(nano_like)
            out.write(random_events(5, seed=2))
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_a_failed_overwrite(tmp_path):
    final = write_events(random_events(10), tmp_path / "keep.parquet")
    before = final.read_bytes()
    with pytest.raises(RuntimeError):
        with __import__("eventlm.io", fromlist=["EventWriter"]).EventWriter(final) as out:
            out.write(random_events(3))
            raise RuntimeError("boom")
    assert final.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.parquet"]


def test_streaming_writer_chunks_equal_one_write(tmp_path):
    from eventlm.io import EventWriter

    events = random_events(500, seed=9)
    with EventWriter(tmp_path / "stream.root") as out:
        for start in range(0, 500, 128):
            chunk = events[start:start + 128]
            out.write(chunk, extra_columns={"anomaly_score": chunk.met.to_numpy()})
    assert out.n_events == 500
    back = read_events(tmp_path / "stream.root")
    assert_same_events(events, back)
    np.testing.assert_allclose(back.anomaly_score.to_numpy(), events.met.to_numpy())


def test_filtered_events_are_packed_before_writing(tmp_path):
    # regression (weaver-core): a filtered/sliced jagged array must not lose or shift rows
    events = random_events(300, seed=4)
    keep = ak.num(events.particles) % 3 != 0
    subset = events[keep]
    subset = ak.with_field(subset, subset.particles[subset.particles.pt > 40], "particles")
    for suffix in (".root", ".parquet", ".csv"):
        back = read_events(write_events(subset, tmp_path / f"f{suffix}"))
        assert_same_events(subset, back)


def test_empty_event_array_writes_a_valid_file(tmp_path):
    from eventlm.events import empty_events

    for suffix in (".root", ".parquet"):
        path = write_events(empty_events(), tmp_path / f"empty{suffix}")
        assert len(read_events(path)) == 0


def test_skip_report_is_empty_for_good_files(ntuple):
    report = ReadReport()
    list(iter_events(ntuple[0], on_error="skip", report=report))
    assert report.n_skipped == 0


def test_ntuple_written_as_an_rntuple_reads_back(tmp_path, mixed_events):
    # uproot writes an RNTuple for ``file[name] = {...}``: the particles become one field of records
    path = tmp_path / "ntuple_rntuple.root"
    events = mixed_events
    labels = events.process.to_list()
    names = sorted(set(labels))
    score = np.linspace(0, 1, len(events), dtype=np.float32)
    with uproot.recreate(path) as f:
        f["Events"] = {
            "run": np.ones(len(events), np.uint32),
            "luminosityBlock": np.ones(len(events), np.uint32),
            "event": events.event_id.to_numpy(),
            "weight": events.weight.to_numpy(),
            "process_code": np.array([process_code(p) for p in labels], np.int32),
            "MET_pt": events.met.to_numpy(),
            "MET_phi": events.met_phi.to_numpy(),
            "Particle": ak.zip({fld: events.particles[fld] for fld in ("kind", "charge", "pt", "eta", "phi", "E")}),
            "anomaly_score": score,
        }
        f.mktree("ProcessNames", {"process_code": np.int32, "process_name": "string"})
        f["ProcessNames"].extend({"process_code": np.array([process_code(n) for n in names], np.int32),
                                  "process_name": ak.Array(names)})
    with uproot.open(path) as f:
        assert f.classnames()["Events;1"] == "ROOT::RNTuple"
    back = read_events(path)
    assert_same_events(events, back, rtol=0, atol=0)
    np.testing.assert_array_equal(back.anomaly_score.to_numpy(), score)
    chunks = list(iter_events(path, step_size=97))
    assert sum(map(len, chunks)) == len(events)
    assert_same_events(events, ak.concatenate(chunks)[[f for f in back.fields if f != "anomaly_score"]])
