"""The command line: every subcommand is there, and eventlm errors become one line, not a traceback."""

from __future__ import annotations

import subprocess
import sys

from eventlm.cli import SUBCOMMANDS, build_parser


def test_every_subcommand_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)


def test_help_lists_the_pipeline():
    out = subprocess.run(
        [sys.executable, "-m", "eventlm", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in SUBCOMMANDS:
        assert name in out


def test_missing_file_is_one_line_error(tmp_path):
    missing = tmp_path / "nope.csv"
    proc = subprocess.run(
        [sys.executable, "-m", "eventlm", "info", str(missing)], capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert str(missing) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
