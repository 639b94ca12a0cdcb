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
