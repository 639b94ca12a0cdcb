"""The model card, reader options on train and score, the event identity through ``eventlm score``,
and the out-of-domain flag: what a CMS or ATLAS analyser needs to use a model on their own files."""

from __future__ import annotations

import json
import logging

import awkward as ak
import numpy as np
import pytest
import uproot

from conftest import real_file, tiny_config
from eventlm.cli import main
from eventlm.config import save_config
from eventlm.events import Kind

DY17 = "DYJetsToLL--UL17_v6-v2_109_Skim.root"  # 2017 NanoAOD: two jets between the 2018 and 2017 medium cuts


@pytest.fixture(scope="module")
def model(tmp_path_factory, background_path):
    """A tiny model trained by `eventlm train` on the bundled background (HT >= 300 GeV, >= 4 jets,
    >= 1 b-jet), with a reader option given (recorded in the card)."""
    d = tmp_path_factory.mktemp("card")
    save_config(tiny_config("causal"), d / "tiny.toml")
    out = d / "model"
    assert main(["train", str(background_path), "--out", str(out), "--config", str(d / "tiny.toml"),
                 "--max-events", "1500", "--btag-era", "2017", "--no-progress"]) == 0
    return out


def test_train_writes_a_card_and_info_prints_it(model, capsys):
    card = json.loads((model / "model_card.json").read_text())
    assert card["inputs"] == ["background.csv.gz"] and card["events"] == 1500
    assert card["reader"]["nanoaod"]["btag_era"] == "2017"
    ps = card["phase_space"]
    assert ps["ht"][0] >= 300 and ps["n_jets"][0] >= 4 and ps["n_bjets"][0] >= 1  # the bundled preselection
    assert sum(p["events"] for p in card["processes"].values()) == 1500
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "btag_era=2017" in out and "training phase space" in out and "ttbar" in out
    assert "ht" in out and "n_bjets" in out


def test_score_keeps_the_event_identity_of_real_data_entry_by_entry(model, tmp_path):
    src = real_file("nano_dimuon.root")
    out = tmp_path / "scored.root"
    assert main(["score", str(model), str(src), "-o", str(out), "--btag-era", "2017", "--no-progress",
                 "--copy-branches", "HLT_IsoMu24", "Flag_*"]) == 0
    with uproot.open(src) as f, uproot.open(out) as g:
        a = f["Events"].arrays(["run", "luminosityBlock", "event", "HLT_IsoMu24", "Flag_goodVertices"], library="np")
        b = g["Events"].arrays(["run", "luminosityBlock", "event", "HLT_IsoMu24", "Flag_goodVertices"], library="np")
        assert g["Events"]["run"].typename == "uint32_t"
    for name in a:  # the scored file joins back to the input (a friend tree): entry k is entry k
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)
    assert (a["run"] == 315267).all() and (a["luminosityBlock"] == 205).all()
    with uproot.open(out) as g:  # the MET flavour, recorded (eventlm.io.selection.MET_FLAVOURS: 1 = PF MET)
        assert (g["Events"]["met_flavour"].array(library="np") == 1).all()


def test_score_keeps_the_atlas_event_identity(model, tmp_path):
    src = real_file("PHYSLITE_example.root")
    out = tmp_path / "scored.root"
    assert main(["score", str(model), str(src), "-o", str(out), "--no-progress"]) == 0
    info = uproot.open(src)["CollectionTree"].arrays(
        ["EventInfoAuxDyn.runNumber", "EventInfoAuxDyn.lumiBlock", "EventInfoAuxDyn.eventNumber",
         "EventInfoAuxDyn.mcChannelNumber"], library="np")
    scored = uproot.open(out)["Events"].arrays(["run", "luminosityBlock", "event", "mcChannelNumber"], library="np")
    for a, b in (("runNumber", "run"), ("lumiBlock", "luminosityBlock"), ("eventNumber", "event"),
                 ("mcChannelNumber", "mcChannelNumber")):
        np.testing.assert_array_equal(scored[b].astype(np.int64), info[f"EventInfoAuxDyn.{a}"].astype(np.int64), err_msg=a)


def test_btag_era_on_score_and_convert_gives_the_same_b_tags(model, tmp_path):
    src = real_file(DY17)
    for era in ("2017", "2018"):
        assert main(["score", str(model), str(src), "-o", str(tmp_path / f"s{era}.root"), "--btag-era", era,
                     "--no-progress"]) == 0
        assert main(["convert", str(src), str(tmp_path / f"c{era}.root"), "--btag-era", era]) == 0
    n_b = {}
    for era in ("2017", "2018"):
        with uproot.open(tmp_path / f"s{era}.root") as s, uproot.open(tmp_path / f"c{era}.root") as c:
            ks, kc = s["Events"]["Particle_kind"].array(), c["Events"]["Particle_kind"].array()
        assert ak.all(ks == kc)
        n_b[era] = int(ak.sum(ks == int(Kind.BJET)))
    assert n_b["2018"] > n_b["2017"]  # the 2018 medium cut is lower: two more b-jets in this file


def test_scoring_with_other_reader_options_warns_in_one_line(model, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="eventlm")
    assert main(["score", str(model), str(real_file(DY17)), "-o", str(tmp_path / "s.root"), "--no-progress"]) == 0
    warned = [r.getMessage() for r in caplog.records if "reader options differ" in r.getMessage()]
    assert len(warned) == 1 and "nanoaod.btag_era '2017' -> None" in warned[0] and "\n" not in warned[0]


def test_drell_yan_outside_the_training_phase_space_is_flagged_and_counted(model, tmp_path, caplog):
    from eventlm.apply import score_files
    from eventlm.card import read_card

    caplog.set_level(logging.WARNING, logger="eventlm")
    src = real_file(DY17)
    out = tmp_path / "dy.root"
    summary = score_files(model, [src], out)
    scored = uproot.open(out)["Events"].arrays(["in_training_phase_space", "Particle_pt", "Particle_kind",
                                                "MET_pt"], library="ak")
    inside = ak.to_numpy(scored.in_training_phase_space)
    # by hand: the card's box on n_jets, n_bjets and HT (jets include b-jets)
    box = read_card(model)["phase_space"]
    jet = (scored.Particle_kind == int(Kind.JET)) | (scored.Particle_kind == int(Kind.BJET))
    ht = ak.to_numpy(ak.sum(scored.Particle_pt[jet], axis=1))
    n_jets = ak.to_numpy(ak.sum(jet, axis=1))
    by_hand_outside = (ht < box["ht"][0]) | (n_jets < box["n_jets"][0]) | (n_jets > box["n_jets"][1])
    assert (~inside)[by_hand_outside].all()  # every event outside by these is flagged
    n_out = int((~inside).sum())
    assert n_out > 90 and summary["outside_phase_space"] == {str(src): n_out}
    assert any(f"{n_out} events outside the training phase space" in r.getMessage() for r in caplog.records)
    calibrated = uproot.open(out)["Events"]["anomaly_score_calibrated"].array(library="np")
    assert not np.any(np.signbit(calibrated) & (calibrated == 0))  # never -0
    n_objects = ak.to_numpy(ak.num(scored.Particle_pt))
    assert np.isnan(calibrated[n_objects < box["n_objects"][0]]).all()  # no class seen: NaN, not the lowest


@pytest.mark.parametrize("command", ["tokens", "analyze", "sample", "export", "finetune", "train", "score"])
def test_every_command_that_reads_events_takes_the_reader_options(command, model, tmp_path, capsys):
    """The reader options reach the reading of every command: a wrong era is refused in one line."""
    nano = str(real_file(DY17))
    argv = {
        "tokens": ["tokens", nano, "--tokenizer", str(model)],
        "analyze": ["analyze", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")],
        "sample": ["sample", str(model), "--events", "2", "--out", str(tmp_path / "g.parquet"), "--reference", nano],
        "export": ["export", str(model), "--onnx", str(tmp_path / "m.onnx"), "--reference", nano],
        "finetune": ["finetune", str(model), "--signal", nano, "--background", nano, "--out", str(tmp_path / "c")],
        "train": ["train", nano, "--out", str(tmp_path / "m")],
        "score": ["score", str(model), nano, "-o", str(tmp_path / "s.root")],
    }[command]
    if command == "analyze":  # the config is read first: give it one
        from conftest import study_toml

        (tmp_path / "missing.toml").write_text(study_toml(background=nano, signal=nano))
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--btag-era", "1999"])
    assert exit_.value.code == 2
    assert "btag_era must be one of" in capsys.readouterr().err
