"""The validation suite's signal cards with real Pythia: decays, truth-level resonances, MET, the CLI."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest

pytest.importorskip("pythia8mc")

from eventlm.generate import PROCESSES, analysis_preselection, generate  # noqa: E402
from eventlm.generate.bundle import SIGNALS, VALIDATION_SIGNALS, Bundle, first_id  # noqa: E402
from eventlm.generate.pythia import M_A3, M_MEDIATOR, M_STOP, M_WPRIME, M_ZPRIME, decay_table, make_pythia  # noqa: E402

NEW_SIGNALS = [p for p in SIGNALS if p not in ("gluino_1000", "tttt_H500")]


def _truth(process: str, n: int, seed: int = 1) -> ak.Array:
    """The full Pythia record of ``n`` events (awkward, one record per particle) and each particle's mother id."""
    pythia = make_pythia(PROCESSES[process], seed)
    prt = pythia.nextBatch(n, 10.0)["prt"]
    return ak.with_field(prt, prt["id"][prt["mother1"]], "mother_id")


def _mass(*particles) -> np.ndarray:
    """Invariant mass of one particle per event (or of their sum), from the four-momenta."""
    p = {k: sum(ak.to_numpy(x["p"][k]) for x in particles) for k in ("px", "py", "pz", "e")}
    return np.sqrt(np.maximum(p["e"] ** 2 - p["px"] ** 2 - p["py"] ** 2 - p["pz"] ** 2, 0.0))


def _first(prt, mask):
    out = ak.firsts(prt[mask])
    assert not ak.any(ak.is_none(out)), "an event lacks the particle"
    return ak.drop_none(out)  # no option type left: plain (not masked) numpy arrays downstream


@pytest.mark.parametrize("process", NEW_SIGNALS + [p for p in VALIDATION_SIGNALS if p != "tttt_H400"])
def test_decay_tables_are_what_the_cards_promise(process):
    pythia = make_pythia(PROCESSES[process], 1)  # raises if a check fails; check again by hand
    for check in PROCESSES[process].checks:
        assert pythia.particleData.m0(check.pid) == pytest.approx(check.mass)
        table = decay_table(pythia, check.pid)
        total = sum(b for b, _ in table)
        assert [prods for _, prods in table] == [check.products], table  # the one open channel
        assert total > 0


@pytest.mark.parametrize(("process", "mass"), [(f"zprime_{M_ZPRIME:.0f}", M_ZPRIME), (f"A3_ttbar_{M_A3:.0f}", M_A3)])
def test_ttbar_resonances_peak_at_their_mass_in_the_truth_record(process, mass):
    prt = _truth(process, 40)
    m = _mass(_first(prt, prt["id"] == 6), _first(prt, prt["id"] == -6))  # the hard process's t and tbar
    assert np.median(m) == pytest.approx(mass, rel=0.05)
    assert np.mean(np.abs(m / mass - 1) < 0.15) > 0.8, np.sort(m)


def test_wprime_decays_to_a_top_and_a_b_at_its_mass():
    prt = _truth(f"wprime_{M_WPRIME:.0f}", 40)
    top = _first(prt, (abs(prt["id"]) == 6) & (abs(prt["mother_id"]) == 34))
    bottom = _first(prt, (abs(prt["id"]) == 5) & (abs(prt["mother_id"]) == 34))
    assert ak.all(top["id"] * bottom["id"] == -30)  # t bbar or tbar b
    m = _mass(top, bottom)
    assert np.median(m) == pytest.approx(M_WPRIME, rel=0.05)
    assert np.mean(np.abs(m / M_WPRIME - 1) < 0.15) > 0.8, np.sort(m)


def test_stop_pairs_give_two_neutralinos_and_large_met():
    prt = _truth(f"stop_{M_STOP:.0f}", 30)
    final = prt["status"] > 0
    assert ak.all(ak.sum(final & (prt["id"] == 1000022), axis=1) == 2)
    stops = prt[abs(prt["id"]) == 1000006]
    assert ak.all(ak.num(stops) >= 2)
    sample = generate(f"stop_{M_STOP:.0f}", 40, seed=3, selection="analysis", progress=False)
    assert analysis_preselection(sample.events).all()
    assert np.median(ak.to_numpy(sample.events.met)) > 150.0  # ttbar: ~30 GeV


def test_ttbar_plus_invisible_scalar_has_dark_matter_and_met():
    process = f"ttbar_S{M_MEDIATOR:.0f}_inv"
    prt = _truth(process, 30)
    final = prt["status"] > 0
    assert ak.all(ak.sum(final & (abs(prt["id"]) == 52), axis=1) == 2)
    assert ak.all(ak.sum(abs(prt["id"]) == 6, axis=1) >= 2)
    mediator = _first(prt, prt["id"] == 35)
    assert np.median(_mass(mediator)) == pytest.approx(M_MEDIATOR, rel=0.05)
    signal = generate(process, 60, seed=3, selection="analysis", progress=False)
    ttbar = generate("ttbar", 60, seed=3, selection="analysis", progress=False)
    assert np.median(ak.to_numpy(signal.events.met)) > 1.5 * np.median(ak.to_numpy(ttbar.events.met))


def test_the_recorded_command_writes_the_bundles_file(tmp_path):
    """``eventlm generate`` with the manifest's command line writes the bytes the bundle writes."""
    from eventlm.cli import main
    from eventlm.generate.bundle import _write, generate_command

    process, n, seed = f"zprime_{M_ZPRIME:.0f}", 30, 7
    (tmp_path / "cli").mkdir()
    (tmp_path / "bundle").mkdir()
    command = generate_command(process, n, seed, tmp_path / "cli").split()
    assert command[:2] == ["eventlm", "generate"]
    assert main(command[1:]) == 0
    bundle = Bundle(tmp_path / "bundle", seed=seed, jobs=1, command="test")
    name = f"{process}.csv.gz"
    sample = bundle._generate(process, n, seed, name)
    _write(sample.events, tmp_path / "bundle" / name)
    assert ak.to_numpy(sample.events.event_id)[0] == first_id(name, process)
    assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "bundle" / name).read_bytes()


def test_the_four_top_validation_card_decays_to_tops_at_400_gev():
    pythia = make_pythia(PROCESSES["tttt_H400"], 1)  # its check: BR(H2 -> t tbar) >= 0.95
    table = decay_table(pythia, 35)
    assert pythia.particleData.m0(35) == pytest.approx(400.0)
    assert sum(b for b, prods in table if prods == (-6, 6)) / sum(b for b, _ in table) > 0.95, table


def test_validation_signals_are_written_with_their_manifest_and_kept_on_a_rerun(tmp_path):
    """``make validation-signals`` (``bundle --only validation``): the files, the selection, ids past the
    bundle's, the summary against a reference background, and a rerun that generates nothing."""
    import json

    from eventlm.generate.bundle import VALIDATION_BLOCK, main
    from eventlm.io import read_events

    name = "zprime_1000"
    reference = Path(__file__).resolve().parents[1] / "data" / "background.csv.gz"
    argv = ["--only", "validation", "--signal", name, "--out", str(tmp_path), "--signal-events", "30", "--jobs", "1",
            "--seed", "5", "--reference", str(reference)]
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert set(manifest["files"]) == {f"{name}.csv.gz"}
    events = read_events(tmp_path / f"{name}.csv.gz")
    assert len(events) == 30 and analysis_preselection(events).all()
    first = 10**7 * (VALIDATION_BLOCK + VALIDATION_SIGNALS.index(name))
    np.testing.assert_array_equal(ak.to_numpy(events.event_id), np.arange(first, first + 30))
    entry = manifest["files"][f"{name}.csv.gz"]
    assert entry["processes"][name]["command"].startswith(f"eventlm generate {name} --events 30 --seed 5")
    assert 0.5 < entry["summary"]["auc_ht"] <= 1.0  # against data/background.csv.gz
    mtime = (tmp_path / f"{name}.csv.gz").stat().st_mtime_ns
    assert main(argv) == 0
    assert (tmp_path / f"{name}.csv.gz").stat().st_mtime_ns == mtime
