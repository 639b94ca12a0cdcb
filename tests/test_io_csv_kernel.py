"""The compiled CSV kernel on its own: thread-safe first use, exact number conversion (against
Python's ``float()``), scans split across threads, numba's bounds checking, and a read-only
installation without a writable cache directory."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same_events, random_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlm
from eventlm.errors import EventFormatError
from eventlm.io import write_events
from eventlm.io.csv import parse_block
from eventlm.io.csv.reader import parse_pieces
from eventlm.io.csv.scan import ScanResult, scan_block, scan_piece

SRC = Path(eventlm.__file__).resolve().parents[1]  # the folder that holds the eventlm package


def _run(code: str, *, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=600)


# --------------------------------------------------------------------------------------------------
# thread-safe first use


def test_two_threads_reading_their_first_csv_at_once_both_succeed(tmp_path):
    # regression: the lazily compiled kernel was set up by swapping module globals for compiled
    # functions, and a second thread doing the same raised "A jit decorator was called on an
    # already jitted function" (about every second fresh process with 8 threads). Each round
    # imports the CSV package anew, so each round is a first use.
    path = write_events(random_events(300, seed=3), tmp_path / "a.csv")
    out = _run(f"""
        import importlib, json, sys, threading
        sys.setswitchinterval(1e-6)  # switch threads often, so that a race shows
        from eventlm.io import read_events
        results, errors = [], []
        def work(barrier):
            barrier.wait()
            try:
                results.append(len(read_events({str(path)!r})))
            except BaseException as err:
                errors.append(repr(err)[:200])
        for _ in range(5):
            for name in [m for m in sys.modules if m.startswith("eventlm.io.csv")]:
                del sys.modules[name]
            importlib.import_module("eventlm.io.csv")
            barrier = threading.Barrier(8)
            threads = [threading.Thread(target=work, args=(barrier,)) for _ in range(8)]
            for t in threads: t.start()
            for t in threads: t.join()
        print(json.dumps({{"results": results, "errors": errors}}))
    """, env={"PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"results": [300] * 40, "errors": []}


# --------------------------------------------------------------------------------------------------
# numbers: the scan (fast path or Arrow fallback) against Python's float() and int()

_digits = st.text("0123456789", max_size=25)
_number_text = st.one_of(
    st.builds(
        lambda sign, whole, frac, exp: sign + whole + frac + exp,
        st.sampled_from(["", "-", "+"]),
        _digits,
        st.one_of(st.just(""), st.builds(lambda d: "." + d, _digits)),
        st.one_of(st.just(""), st.builds(lambda e, s, d: e + s + d, st.sampled_from("eE"),
                                          st.sampled_from(["", "+", "-"]), st.text("0123456789", max_size=4))),
    ),
    st.floats(allow_nan=False).map(repr),
    st.floats(allow_nan=False, width=32).map(lambda x: f"{x!r}"),
    st.builds(lambda x, k: f"{x:.{k}g}", st.floats(allow_nan=False, allow_infinity=False), st.integers(1, 20)),
    st.builds(lambda x, k: f"{x:.{k}f}", st.floats(-1e9, 1e9), st.integers(0, 20)),
    st.sampled_from(["0", "-0", "00012", "1.", ".5", "-.5", "1e22", "1e23", "9007199254740993",
                     "123456789012345678", "1234567890123456789", "4.9e-324", "2.5e-324", "1e309", "nan",
                     "inf", "-inf", "Infinity", "0.1e-5", "1E5", "e5", ".", "-", "+", ""]),
)


def _float_or_none(text: str):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_number_text)
def test_numbers_convert_exactly_as_python_float_does(text):
    # the same text as weight (float64), MET and E (MeV -> GeV float32) and eta (float32)
    line = f"7;p;{text};{text};0.5;j,{text},1000,{text},0.25;\n".encode()
    expected = _float_or_none(text)
    if expected is None:
        with pytest.raises(EventFormatError, match="line 1: "):
            parse_block(line, "x.csv")
        return
    events = parse_block(line, "x.csv")
    with np.errstate(over="ignore"):
        gev, plain = np.float32(expected / 1000.0), np.float32(expected)
    bits = lambda a: np.asarray(a).view(np.asarray(a).dtype.str.replace("f", "i"))  # noqa: E731
    assert bits(events.weight.to_numpy()[0]) == bits(np.float64(expected))
    assert bits(events.met.to_numpy()[0]) == bits(gev)
    assert bits(events.particles.E.to_numpy()[0, 0]) == bits(gev)
    assert bits(events.particles.eta.to_numpy()[0, 0]) == bits(plain)


@settings(max_examples=150, deadline=None)
@given(st.builds(lambda sign, d: sign + d, st.sampled_from(["", "-", "+"]), st.text("0123456789", max_size=22)))
def test_event_ids_convert_exactly_as_python_int_does(text):
    line = f"{text};p;1;1;0;\n".encode()
    try:
        expected = int(text)
    except ValueError:
        expected = None
    if expected is None or not -(2**63) <= expected < 2**63:
        with pytest.raises(EventFormatError, match="line 1: event_id"):
            parse_block(line, "x.csv")
    else:
        assert parse_block(line, "x.csv").event_id.to_numpy()[0] == expected


# --------------------------------------------------------------------------------------------------
# scans split across threads and pieces


def _varied_text(n: int, seed: int) -> bytes:
    """Lines of every kind: plain, many objects, none, long weights (Arrow fallback), odd numbers,
    and bad lines of several sorts."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        r = rng.integers(0, 12)
        objs = "".join(f"{rng.choice(['j', 'b', 'e-', 'm+', 'g'])},{rng.uniform(1e3, 1e6):.{rng.integers(0, 9)}f},"
                       f"{rng.uniform(1e3, 1e5):.3f},{rng.uniform(-3, 3):.6g},{rng.uniform(-3, 3):.7e};"
                       for _ in range(rng.integers(0, 12)))
        weight = repr(rng.uniform(0, 1)) if r == 1 else "1"
        if r == 2:
            lines.append(f"{i};ttbar;{weight};1e3;0;j,1,2,3,nan;")
        elif r == 3:
            lines.append(f"{i};;1;1;0;")
        elif r == 4:
            lines.append(f"{i};ttbar;1;12345678901234567890;0;{objs}")
        elif r == 5:
            lines.append(f"{i};ttbar;1;1;0;x,1,1,1,1;")
        else:
            lines.append(f"{i};ttbar;{weight};{rng.uniform(0, 1e6)!r};{rng.uniform(-3, 3):.5f};{objs}")
    return ("\n".join(lines) + "\n").encode()


_FB_TARGETS = ("weight", "met", "met_phi", "E", "pt", "eta", "phi", "event_id")


def _defined(scan: ScanResult, name: str) -> np.ndarray:
    """A column of the scan with the slots of fallback numbers (not written by the scan) zeroed."""
    values = getattr(scan, name)
    if name in _FB_TARGETS:
        values = values.copy()
        values[scan.fb_row[scan.fb_col == _FB_TARGETS.index(name)]] = 0
    return values


def _assert_same_scan(a: ScanResult, b: ScanResult) -> None:
    for name in ScanResult._fields:
        x, y = _defined(a, name), _defined(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, name
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert x == y, name


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scan_cut_across_threads_equals_one_scan(seed):
    text = _varied_text(400, seed)
    buf = np.frombuffer(text, np.uint8)
    whole = scan_piece(buf)
    assert len(whole.bad) and len(whole.fb_col)  # the text exercises both
    ends = np.flatnonzero(buf == 10) + 1
    rng = np.random.default_rng(seed)
    for cuts in ([int(ends[0])], [int(ends[len(ends) // 2])], sorted(rng.choice(ends[:-1], 7, replace=False)),
                 list(ends[:-1])):
        _assert_same_scan(whole, scan_block(buf, cuts=[int(c) for c in cuts]))


def test_pieces_parse_like_one_block_with_the_same_errors_and_skips(tmp_path):
    from eventlm.io import ReadReport

    text = _varied_text(300, 5)
    buf = np.frombuffer(text, np.uint8)
    ends = np.flatnonzero(buf == 10) + 1
    bounds = [0, *[int(e) for e in ends[::37]], buf.size]
    pieces = [buf[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    one, many = ReadReport(), ReadReport()
    assert_same_events(parse_block(buf, "x.csv", line0=10, on_error="skip", report=one),
                       parse_pieces(pieces, "x.csv", line0=10, on_error="skip", report=many))
    assert one.lines() == many.lines() and len(one.lines()) > 10
    with pytest.raises(EventFormatError) as a:
        parse_block(buf, "x.csv")
    with pytest.raises(EventFormatError) as b:
        parse_pieces(pieces, "x.csv")
    assert str(a.value) == str(b.value)
    good = _varied_text(300, 5).split(b"\n")
    good = b"".join(line + b"\n" for line in good if line and b"nan" not in line and b";;" not in line
                    and b"x," not in line and b"12345678901234567890" not in line)
    gbuf = np.frombuffer(good, np.uint8)
    gends = np.flatnonzero(gbuf == 10) + 1
    gb = [0, *[int(e) for e in gends[::11]], gbuf.size]
    assert_same_events(parse_block(gbuf, "x.csv"),
                       parse_pieces([gbuf[a:b] for a, b in zip(gb[:-1], gb[1:]) if b > a], "x.csv"))


# --------------------------------------------------------------------------------------------------
# numba's bounds checking, in a read-only installation without a writable cache directory


def _tricky_files(folder: Path) -> list[Path]:
    files = []
    text = _varied_text(700, 9)
    for name, data in (("varied.csv", text), ("no_final_newline.csv", b"1;p;1;1;0;j,1,2,3,4;"),
                       ("crlf.csv", text.replace(b"\n", b"\r\n")), ("short.csv", b"1;p;1;1;0;\n2;p;1;1;"),
                       ("one_object.csv", b"5;p;1;1;0;g,10,10,0,0;\n")):
        (folder / name).write_bytes(data)
        files.append(folder / name)
    gz = write_events(random_events(3000, seed=4), folder / "events.csv.gz")
    (folder / "varied.csv.gz").write_bytes(gzip.compress(text))
    return [*files, gz, folder / "varied.csv.gz"]


_DIGEST = """
import json, sys
import awkward as ak
import numpy as np
from eventlm.io import read_events
out = {}
for path in sys.argv[1:]:
    events, report = read_events(path, on_error="skip", return_report=True, step_size=None)
    parts = events.particles
    out[path] = [len(events), report.lines(), float(np.sum(events.weight.to_numpy())),
                 float(ak.sum(parts.pt)), float(ak.sum(parts.eta)),
                 int(np.sum(events.event_id.to_numpy()))]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def read_only_run():
    """One subprocess that reads tricky files with the package copied where nothing can be written
    (its ``__pycache__`` folders cannot be created, HOME is not a writable folder, no
    NUMBA_CACHE_DIR) and with numba's bounds checking on (so the kernel is compiled anew)."""
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="eventlm-ro-"))
    try:
        pkg = top / "pkg"
        shutil.copytree(SRC / "eventlm", pkg / "eventlm", ignore=shutil.ignore_patterns("__pycache__"))
        # a file where each __pycache__ folder would go: no cache next to the code, even for root
        # (who writes into read-only folders)
        for root, _, _ in os.walk(pkg / "eventlm"):
            (Path(root) / "__pycache__").write_bytes(b"")
        (top / "home").write_bytes(b"")  # HOME: not a folder, so ~/.cache cannot be made
        (top / "data").mkdir()
        files = _tricky_files(top / "data")
        for root, dirs, names in os.walk(pkg):
            for name in [*dirs, *names]:
                path = Path(root) / name
                path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        env = {**os.environ, "PYTHONPATH": str(pkg), "HOME": str(top / "home"), "NUMBA_BOUNDSCHECK": "1"}
        for name in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX"):
            env.pop(name, None)
        run = subprocess.run([sys.executable, "-c", _DIGEST, *map(str, files)], capture_output=True, text=True,
                             env=env, cwd=str(top), timeout=600)
        probe = subprocess.run(
            [sys.executable, "-c", "import os, sys\nfor d in sys.argv[1:]:\n    try:\n        os.makedirs(d, "
             "exist_ok=True)\n        open(os.path.join(d, 'probe'), 'w').close()\n        print('writable', d)\n"
             "    except OSError:\n        pass",
             str(pkg / "eventlm" / "io" / "csv" / "__pycache__"), os.path.expanduser("~/.cache/numba").replace(
                 os.path.expanduser("~"), str(top / "home"))],
            capture_output=True, text=True, env=env, cwd=str(top))
        yield run, files, probe
    finally:
        for root, dirs, names in os.walk(top):
            for name in [*dirs, *names]:
                (Path(root) / name).chmod(0o755)
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.slow  # compiles the kernel anew (about 20 s of CPU)
def test_csv_reads_from_a_read_only_package_without_a_writable_cache(read_only_run):
    run, files, probe = read_only_run
    assert probe.returncode == 0 and "writable" not in probe.stdout, probe.stdout  # else it tests nothing
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Error" not in run.stderr and "Traceback" not in run.stderr, run.stderr[-3000:]
    assert len(json.loads(run.stdout.strip().splitlines()[-1])) == len(files)


@pytest.mark.slow  # the same subprocess as above
def test_kernel_stays_in_bounds_and_agrees_under_numba_boundscheck(read_only_run):
    run, files, _ = read_only_run
    assert run.returncode == 0, run.stderr[-3000:]  # an out-of-bounds access raises IndexError there
    got = json.loads(run.stdout.strip().splitlines()[-1])
    here = json.loads(_run(_DIGEST.replace("sys.argv[1:]", repr([str(f) for f in files]))).stdout.splitlines()[-1])
    assert got == here
    assert got[str(files[0])][1], "the varied file has bad lines, skipped and reported"
