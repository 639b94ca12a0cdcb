"""The generator's plumbing that needs neither Pythia nor FastJet: errors, shard plan, seeds, plots."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from eventlm.cli import main
from eventlm.errors import EventlmError
from eventlm.generate.pythia import PROCESSES, get_process, shard_seeds, shard_sizes


def test_wtop_is_a_clear_error(capsys):
    with pytest.raises(EventlmError, match="no gb -> tW process.*single_top"):
        get_process("wtop")
    assert main(["generate", "wtop", "--events", "10", "--out", "x.csv.gz"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "single_top" in err


def test_unknown_process_lists_the_available_ones():
    with pytest.raises(EventlmError, match="ttbar, ttbarHiggs, single_top, w_jets, gluino_1000, tttt_H500"):
        get_process("zprime")


def test_missing_generate_extra_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "pythia8mc", None)  # import fails as if not installed
    assert main(["generate", "ttbar", "--events", "10", "--out", str(tmp_path / "x.csv.gz")]) == 2
    err = capsys.readouterr().err
    assert "pip install eventlm[generate]" in err and err.count("\n") == 1
    assert not (tmp_path / "x.csv.gz").exists()


def test_cli_process_list_matches_the_cards():
    from eventlm.cli.generate import PROCESS_NAMES

    assert tuple(PROCESSES) == PROCESS_NAMES


def test_shard_plan_depends_on_the_event_count_only():
    assert shard_sizes(1) == [1]
    assert shard_sizes(499) == [499]
    assert shard_sizes(1000) == [250] * 4
    sizes = shard_sizes(100_003)
    assert sum(sizes) == 100_003 and len(sizes) == 32 and max(sizes) - min(sizes) <= 1


def test_shard_seeds_are_reproducible_and_distinct():
    a = shard_seeds("ttbar", 5, 8)
    b = shard_seeds("ttbar", 5, 8)
    assert [s for s, _ in a] == [s for s, _ in b]
    assert len({s for s, _ in a}) == 8
    assert all(1 <= s <= 900_000_000 for s, _ in a)
    # other processes and other master seeds get other streams
    assert {s for s, _ in a}.isdisjoint(s for s, _ in shard_seeds("w_jets", 5, 8))
    assert {s for s, _ in a}.isdisjoint(s for s, _ in shard_seeds("ttbar", 6, 8))
    # the detector streams are reproducible too
    x = np.random.default_rng(a[0][1]).random(3)
    y = np.random.default_rng(b[0][1]).random(3)
    np.testing.assert_array_equal(x, y)


def test_validation_plots_render(make_events, tmp_path):
    from eventlm.plotting.kinematics import plot_generator_validation

    samples = {"ttbar": make_events(200, seed=1), "gluino_1000": make_events(100, seed=2, process="gluino_1000")}
    paths = plot_generator_validation(samples, tmp_path)
    assert len(paths) == 6
    for path in paths:
        assert path.stat().st_size > 10_000


def test_help_lists_every_process(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for name in PROCESSES:
        assert name in out


def test_signal_cards_check_their_decays():
    """Every signal card names the decay it promises, checked after Pythia's init (tests/test_generate.py)."""
    for process in PROCESSES.values():
        assert bool(process.checks) == process.signal, process.name
        for check in process.checks:
            assert check.products == tuple(sorted(check.products)) and 0 < check.min_br <= 1


def test_the_suite_has_six_signals_three_with_the_background_object_count():
    from eventlm.generate.bundle import FILE_INDEX, SIGNALS

    assert len(SIGNALS) >= 6
    assert sum(PROCESSES[p].background_multiplicity for p in SIGNALS) >= 3
    assert all(f"{p}.csv.gz" in FILE_INDEX for p in SIGNALS)


def test_validation_signals_are_the_test_families_at_other_masses_and_never_bundled():
    """The validation set (issue 25: choose the score without the test signals) shares no card with
    data/'s signals: other masses of the same families, each with its decay check, no bundle file."""
    from eventlm.generate.bundle import FILE_INDEX, SIGNALS, VALIDATION_BLOCK, VALIDATION_SIGNALS, id_blocks

    assert len(VALIDATION_SIGNALS) >= 4
    assert not set(VALIDATION_SIGNALS) & set(SIGNALS)
    assert not any(f"{p}.csv.gz" in FILE_INDEX for p in VALIDATION_SIGNALS)
    import re

    def family(name):  # the name without its masses
        return re.sub(r"\d+", "", name)

    test_cards = {family(p): p for p in SIGNALS}
    for name in VALIDATION_SIGNALS:
        card = PROCESSES[name]
        assert card.signal and card.validation and card.checks
        sibling = PROCESSES[test_cards[family(name)]]  # the test signal of the same family
        assert card.checks[0].mass != sibling.checks[0].mass
        assert [c.products for c in card.checks] == [c.products for c in sibling.checks]
    blocks = range(VALIDATION_BLOCK, VALIDATION_BLOCK + len(VALIDATION_SIGNALS))
    assert not set(blocks) & set(id_blocks().values())


def test_the_test_signal_cards_did_not_change_when_they_became_parametric():
    """The seven bundled signals were generated from these exact settings (data/MANIFEST.json commands)."""
    from eventlm.generate.pythia import process_settings

    zprime = process_settings(PROCESSES["zprime_1500"], 1)
    assert "32:m0 = 1500" in zprime and "Zprime:gmZmode = 3" in zprime
    a3 = process_settings(PROCESSES["A3_ttbar_750"], 1)
    assert {"36:mWidth = 30.0000", "36:mMin = 450", "36:mMax = 1050"} <= set(a3)
    assert "35:m0 = 500." in process_settings(PROCESSES["tttt_H500"], 1)
    assert "35:mWidth = 7.9566" in process_settings(PROCESSES["ttbar_S200_inv"], 1)
    # below the t tbar threshold the A3's Breit-Wigner starts at it
    assert "36:mMin = 350" in process_settings(PROCESSES["A3_ttbar_500"], 1)


def test_the_background_pilot_can_come_from_the_bundled_manifest(tmp_path):
    from pathlib import Path

    from eventlm.generate.bundle import BACKGROUNDS, _pilot_from

    data = Path(__file__).resolve().parents[1] / "data" / "MANIFEST.json"
    pilot = _pilot_from(data)
    assert set(BACKGROUNDS) <= set(pilot)
    assert all(pilot[p]["sigma_pb"] > 0 and 0 < pilot[p]["acceptance"] <= 1 for p in BACKGROUNDS)
    (tmp_path / "MANIFEST.json").write_text('{"files": {}}')
    with pytest.raises(SystemExit, match="no background.csv.gz entry"):
        _pilot_from(tmp_path / "MANIFEST.json")
