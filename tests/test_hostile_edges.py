"""Hostile numbers and inputs that parse but make no sense (issue 24): every numeric option and config
value is checked at its edges before any work (NaN, inf, negative, beyond int64, shapes that do not fit
together), in one line naming the option or key, exit status 2; ids that would overflow are refused,
never wrapped."""

from __future__ import annotations

import socket
import time

import pytest

from conftest import one_error, random_events, study_toml

from eventlm.io import read_events, write_events


def parse_error(capsys, argv, *needles):
    """An option argparse refuses: exit status 2 and one line holding every needle."""
    from eventlm.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    for needle in needles:
        assert needle in err[0], (needle, err[0])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edges")
    write_events(random_events(60, seed=31), folder / "in.parquet")
    return folder


@pytest.fixture(scope="module")
def causal(tmp_path_factory):
    """A causal tiny model with its sampling table."""
    from conftest import tiny_causal_model

    return tiny_causal_model(tmp_path_factory, random_events(200, seed=32))


@pytest.mark.parametrize(("toml", "needle"), [
    ("seed = -1", "seed = -1 must be in [0, 2**63 - 1]"),
    ("seed = 1180591620717411303424", "seed = 1180591620717411303424 must be in [0, 2**63 - 1]"),
    ("[model]\nn_embd = 18\nn_head = 4", "[model] n_embd = 18 is not a multiple of n_head = 4"),
    ("[model]\nn_embd = 12\nn_head = 4", "needs an even head dimension"),
    ('[model]\nposition = "learned"\nmax_len = 4', "[model] max_len = 4 is shorter than the longest token sequence"),
    ("[model]\ndropout = 1.5", "[model] dropout = 1.5 must be < 1"),
    ("[train]\nlr = nan", "[train] lr = nan must be a finite number"),
    ("[train]\ngrad_clip = inf", "[train] grad_clip = inf must be a finite number"),
])
def test_train_config_values_at_the_edges(folder, tmp_path, capsys, toml, needle):
    (tmp_path / "c.toml").write_text(toml + "\n")
    one_error(capsys, ["train", str(folder / "in.parquet"), "--out", str(tmp_path / "m"), "--config",
                       str(tmp_path / "c.toml")], "c.toml", needle)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**70), "1.5"])
def test_seeds_out_of_range_are_refused(folder, tmp_path, capsys, seed):
    for argv in (["train", str(folder / "in.parquet"), "--out", str(tmp_path / "m")],
                 ["sample", str(tmp_path), "-n", "5", "-o", str(tmp_path / "s.parquet")],
                 ["finetune", str(tmp_path), "--signal", "s.parquet", "--background", "b.parquet", "--out", "x"]):
        parse_error(capsys, [*argv, f"--seed={seed}"], "--seed", seed)


@pytest.mark.parametrize("temperature", ["nan", "inf", "-inf", "0", "-1"])
def test_sample_temperature_must_be_finite_and_positive(tmp_path, capsys, temperature):
    parse_error(capsys, ["sample", str(tmp_path), "-n", "5", "-o", str(tmp_path / "s.parquet"),
                         f"--temperature={temperature}"], "--temperature", "finite number > 0", temperature)


def test_sample_first_id_is_refused_beyond_int64_never_wrapped(causal, tmp_path, capsys):
    top = 2**63 - 1
    one_error(capsys, ["sample", str(causal), "-n", "10", "-o", str(tmp_path / "a.parquet"),
                       f"--first-id={top - 5}", "--no-progress"], "--first-id", "would not fit in int64", "never wrapped")
    one_error(capsys, ["sample", str(causal), "-n", "1", "-o", str(tmp_path / "a.parquet"),
                       f"--first-id={-(2**63) - 1}", "--no-progress"], "--first-id", "int64")
    assert not (tmp_path / "a.parquet").exists()
    from eventlm.cli import main

    assert main(["sample", str(causal), "-n", "3", "-o", str(tmp_path / "b.parquet"), f"--first-id={top - 2}",
                 "--no-progress"]) == 0
    assert read_events(tmp_path / "b.parquet").event_id.tolist() == [top - 2, top - 1, top]


def test_analyze_workers_zero_and_a_scheduler_with_nothing_listening(folder, tmp_path, capsys):
    bkg = write_events(random_events(40, seed=33), tmp_path / "b.root")
    sig = write_events(random_events(40, seed=34, process="sig", start_id=1000), tmp_path / "s.root")
    (tmp_path / "study.toml").write_text(study_toml(background=bkg, signal=sig))
    config = str(tmp_path / "study.toml")
    parse_error(capsys, ["analyze", config, "--out", str(tmp_path / "o"), "--executor", "futures", "--workers", "0"],
                "--workers", "must be a positive integer, got 0")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    one_error(capsys, ["analyze", config, "--out", str(tmp_path / "o"), "--scheduler", f"tcp://127.0.0.1:{port}"],
              "study.toml", "[run] scheduler", f"127.0.0.1:{port}", "no dask scheduler answers there")
    assert time.perf_counter() - t0 < 10  # dask itself waits 30 s, after reading and writing the inputs
    one_error(capsys, ["analyze", config, "--out", str(tmp_path / "o"), "--scheduler", "nonsense"],
              "expected a scheduler address like tcp://HOST:8786")
    assert not (tmp_path / "o").exists()


# ---- inputs that parse but make no sense -------------------------------------------------------------

@pytest.mark.parametrize(("field", "line"), [
    ("object 1 E: not a number: '100_000'", "1;ttbar;1;5000;0.1;j,100_000,50000,0.5,0.1;"),
    ("object 1 E: not a number: '١٠٠٠٠٠'", "1;ttbar;1;5000;0.1;j,١٠٠٠٠٠,50000,0.5,0.1;"),
    ("event_id: not an integer: '1_0'", "1_0;ttbar;1;5000;0.1;j,100000,50000,0.5,0.1;"),
])
def test_malformed_csv_line_names_the_field(tmp_path, capsys, field, line):
    """Python's int() and float() take '_' separators and other scripts' digits; the reader does not,
    and says which field holds them instead of "malformed line"."""
    (tmp_path / "a.csv").write_text(line + "\n", encoding="utf-8")
    one_error(capsys, ["info", str(tmp_path / "a.csv")], "a.csv, line 1", field, "ASCII digits only")


def test_paths_that_are_not_files_are_named_as_such(tmp_path, capsys):
    import os

    os.symlink("loop.csv", tmp_path / "loop.csv")
    (tmp_path / "file").write_text("x")
    os.mkfifo(tmp_path / "fifo.csv")
    one_error(capsys, ["info", str(tmp_path / "loop.csv")], "loop.csv", "symlink loop")
    one_error(capsys, ["info", str(tmp_path / "file" / "a.csv")], "file/a.csv", "file is a file, not a directory")
    one_error(capsys, ["info", str(tmp_path / "fifo.csv")], "fifo.csv", "not a regular file (a FIFO")  # no hang


def test_dictionary_encoded_parquet_reads(folder, tmp_path):
    import awkward as ak
    import pyarrow.parquet as pq

    events = read_events(folder / "in.parquet")
    table = ak.to_arrow_table(events, extensionarray=False)
    table = table.set_column(1, "process", table["process"].dictionary_encode())
    pq.write_table(table, tmp_path / "dict.parquet", use_dictionary=True)
    assert pq.read_schema(tmp_path / "dict.parquet").field("process").type.value_type is not None
    back = read_events(tmp_path / "dict.parquet")
    assert back.event_id.tolist() == events.event_id.tolist() and back.process.tolist() == events.process.tolist()


def _rewritten_root(src, dst, **replace):
    """The eventlm ntuple ``src`` with some branches replaced (written as uproot writes them)."""
    import awkward as ak
    import uproot

    with uproot.open(src) as f:
        tree = f["Events"]
        data = {k: tree[k].array() for k in tree.keys() if not k.startswith("n")}
        names = f["ProcessNames"].arrays()
    data.update(replace)
    particles = {k[len("Particle_"):]: data.pop(k) for k in list(data) if k.startswith("Particle_")}
    with uproot.recreate(dst) as out:
        out["Events"] = {**data, "Particle": ak.zip(particles)}
        out["ProcessNames"] = {k: names[k] for k in names.fields}
    return dst


def test_fractional_ids_and_kinds_and_boolean_met_are_refused(folder, tmp_path, capsys):
    import awkward as ak
    import numpy as np

    root = write_events(read_events(folder / "in.parquet")[:5], tmp_path / "good.root")
    with __import__("uproot").open(root) as f:
        event, kind = f["Events"]["event"].array(library="np"), f["Events"]["Particle_kind"].array()
    cases = {
        "frac_id": ({"event": event + 0.5}, "entry 0: event = "),
        "frac_kind": ({"Particle_kind": ak.values_astype(kind, np.float64) + 0.5}, "Particle_kind = "),
        "bool_met": ({"MET_pt": np.ones(5, dtype=bool)}, "branch MET_pt is boolean"),
    }
    for name, (replace, needle) in cases.items():
        path = _rewritten_root(root, tmp_path / f"{name}.root", **replace)
        one_error(capsys, ["info", str(path)], f"{name}.root", needle)
    assert len(read_events(_rewritten_root(root, tmp_path / "float_id.root", event=event.astype(float)))) == 5


def test_nanoaod_with_a_miscounted_jagged_branch_is_named(nanoaod_path, tmp_path, capsys):
    """Regression: was "not a readable ROOT file: truncated or corrupt (cannot broadcast nested list)"."""
    import awkward as ak
    import uproot

    with uproot.open(nanoaod_path) as f:
        arrays = f["Events"].arrays(["event", "MET_pt", "MET_phi", "Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass",
                                     "Muon_charge"])
    i = int(ak.argmax(ak.num(arrays.Muon_pt)))
    eta = ak.concatenate([arrays.Muon_eta[:i], arrays.Muon_eta[i:i + 1][:, 1:], arrays.Muon_eta[i + 1:]])
    data = {k: arrays[k] for k in arrays.fields}
    data["Muon_eta"] = eta
    with uproot.recreate(tmp_path / "nano.root") as out:
        out.mktree("Events", {k: v.type.content for k, v in data.items()},
                   counter_name=lambda c: "nMuonEta" if c == "Muon_eta" else "nMuon")
        out["Events"].extend(data)
    one_error(capsys, ["info", str(tmp_path / "nano.root")], f"nano.root, entry {i}",
              "miscounted jagged branches: Muon_eta holds")


@pytest.mark.parametrize(("regions", "needle"), [
    ('[regions.CR]\nselection = ""\n[regions.SR]\nselection = "n_jets >= 4"', "[regions.CR] has no selection"),
    ('[regions.CR]\nselection = "n_jets>=4"\n[regions.SR]\nselection = "n_jets >= 4"', "select the same events"),
])
def test_empty_and_identical_regions_are_refused(tmp_path, capsys, regions, needle):
    from eventlm.analysis.config import AnalysisConfigError, load_analysis_config

    text = study_toml(background=tmp_path / "b.root", signal=tmp_path / "s.root")
    head, tail = text.split("[regions.CR]")
    tail = tail[tail.index("[threshold]"):]
    (tmp_path / "study.toml").write_text(head + regions + "\n\n" + tail)
    with pytest.raises(AnalysisConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_analysis_config(tmp_path / "study.toml")


def test_non_ascii_sample_name_is_refused_up_front_naming_the_key(tmp_path, capsys):
    """coffea hashes dataset names as ASCII: it crashed inside coffea; now the config load says so."""
    bkg = write_events(random_events(20, seed=35), tmp_path / "b.root")
    (tmp_path / "study.toml").write_text(study_toml(background=bkg, signal=bkg, signal_name='"sïg"'))
    one_error(capsys, ["analyze", str(tmp_path / "study.toml"), "--out", str(tmp_path / "o")],
              "[inputs.signals] sïg", "must be printable ASCII")


def test_signal_identical_to_background_is_warned(causal, folder, tmp_path, caplog):
    from eventlm.finetune import finetune

    path = folder / "in.parquet"
    finetune(causal, [path], [path], tmp_path / "ft", epochs=1, progress=False, exclude_test=False)
    warned = [r.getMessage() for r in caplog.records if "also background events" in r.getMessage()]
    assert warned == ["60 of the 60 signal events are also background events (same event id, MET and objects): "
                      "labelled both ways, they cannot be separated (is the signal the background file?)"]


@pytest.mark.parametrize(("key", "change", "needle"), [
    ("pt_edges", lambda v: v[:2] + [float("nan")] + v[3:], "pt_edges must be a list of finite numbers"),
    ("eta_edges", lambda v: v[::-1], "eta_edges must increase"),
])
def test_tokenizer_file_with_nan_or_reversed_bins_is_refused(causal, folder, tmp_path, capsys, key, change, needle):
    import json

    payload = json.loads((causal / "tokenizer.json").read_text())
    payload["params"][key] = change(payload["params"][key])
    (tmp_path / "t.json").write_text(json.dumps(payload))
    one_error(capsys, ["tokens", str(folder / "in.parquet"), "--tokenizer", str(tmp_path / "t.json")], "t.json", needle)


# ---- model-directory files: corrupt, NaN-bearing or a refused pickle payload --------------------------

class _Payload:
    """A pickle that would run code when loaded (print); every load must refuse it."""

    def __reduce__(self):
        return (print, ("this payload ran",))


@pytest.fixture
def model_copy(causal, tmp_path):
    import shutil

    from eventlm.apply import calibrate

    model = shutil.copytree(causal, tmp_path / "m")
    calibrate(model, random_events(200, seed=32))
    return model


@pytest.mark.parametrize(("name", "write", "needle"), [
    ("calibration.json", lambda p: p.write_text(p.read_text().replace("[", "[NaN, ", 1)), "not a calibration file"),
    ("calibration.json", lambda p: p.write_text("not json"), "not a calibration file"),
    ("sampling.npz", lambda p: __import__("numpy").savez(p, pt=__import__("numpy").array([_Payload()], dtype=object)),
     "a pickled object array, refused"),
    ("best.pt", lambda p: __import__("torch").save({"model": _Payload()}, p), "refused to unpickle, nothing run"),
])
def test_corrupt_model_files_are_one_line_naming_the_file(model_copy, folder, tmp_path, capsys, name, write, needle):
    write(model_copy / name)
    command = ["sample", str(model_copy), "-n", "3"] if name == "sampling.npz" else \
        ["score", str(folder / "in.parquet"), "--model", str(model_copy)]
    one_error(capsys, [*command, "-o", str(tmp_path / "o.parquet"), "--no-progress"], f"m/{name}", needle)
    assert "this payload ran" not in capsys.readouterr().out
    assert not (tmp_path / "o.parquet").exists()


def test_best_pt_of_another_architecture_is_refused(model_copy, folder, tmp_path, capsys):
    import torch

    state = torch.load(model_copy / "best.pt", weights_only=True)
    state["run_config"]["model"]["n_embd"] = 32  # another run's best.pt, the same tokenizer
    torch.save(state, model_copy / "best.pt")
    one_error(capsys, ["score", str(folder / "in.parquet"), "--model", str(model_copy), "-o",
                       str(tmp_path / "o.parquet")], "m/best.pt", "weights of another model ([model] n_embd = 32, "
              "config.toml says 16)")


def test_learned_tokenizer_weights_with_a_pickle_payload_are_refused(tmp_path, capsys):
    import torch

    from eventlm.errors import CheckpointMismatchError
    from eventlm.tokenize import get_tokenizer, load_tokenizer

    tok = get_tokenizer("vqvae", seed=3, codebook_size=16, hidden=16, latent_dim=4)
    tok.fit(random_events(120, seed=36), epochs=1, progress=False)
    path = tok.save(tmp_path / "tokenizer.json")
    weights = next(p for p in tmp_path.iterdir() if p.suffix == ".pt")
    torch.save({"w": _Payload()}, weights)
    with pytest.raises(CheckpointMismatchError, match="refused or unreadable"):
        load_tokenizer(path)
    assert "this payload ran" not in capsys.readouterr().out
