"""A core install (``pip install eventlm``, no extras) reads, trains and scores; what needs an extra
says so in one line. The extras are made unimportable in a child process to stand in for a machine
where they are not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from eventlm.errors import MissingExtraError
from eventlm.extras import EXTRAS, require, require_extra

#: Everything an extra installs, none of which the core may need.
EXTRA_PACKAGES = sorted({m for ms in EXTRAS.values() for m in ms} | {"dask"})

BLOCKER = textwrap.dedent(f"""
    import importlib.abc, sys

    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {EXTRA_PACKAGES!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    import importlib.util
    _find = importlib.util.find_spec
    importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in {EXTRA_PACKAGES!r} else _find(name, *a)
""")


def _core_only(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_core_reads_trains_and_scores_without_any_extra(fixture_path, tmp_path):
    run = _core_only(f"""
        import sys
        from eventlm.cli import main
        model, out = {str(tmp_path / "model")!r}, {str(tmp_path / "scored.root")!r}
        assert main(["train", {str(fixture_path)!r}, "--out", model, "--epochs", "1", "--no-progress"]) == 0
        assert main(["score", "--model", model, {str(fixture_path)!r}, "--output", out, "--no-progress"]) == 0
        from eventlm.io import read_events
        scored, events = read_events(out), read_events({str(fixture_path)!r})
        assert len(scored) == len(events) and "anomaly_score" in scored.fields
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {EXTRA_PACKAGES!r})
        assert not loaded, loaded
        print("ok")
    """)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")
    assert (tmp_path / "model" / "calibration.json").exists()
    assert not (tmp_path / "model" / "loss.png").exists()
    assert "loss.png not drawn" in run.stderr and "eventlm[plots]" in run.stderr


@pytest.mark.parametrize(("argv", "extra"), [
    (["analyze", "analysis/tttt_H500.toml", "--model", "m", "--out", "o"], "analysis"),
    (["demo", "--out", "o"], "analysis"),
])
def test_commands_that_need_an_extra_say_which_in_one_line(argv, extra):
    run = _core_only(f"""
        import sys
        from eventlm.cli import main
        sys.exit(main({argv!r}))
    """, timeout=120)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'eventlm[{extra}]'" in lines[0], run.stderr
    assert "Traceback" not in run.stderr


def test_reading_nanoaod_without_coffea_names_the_extra():
    run = _core_only("""
        from eventlm.io.selection import candidates
        try:
            candidates([[1.0]], [[0.0]], [[0.0]], [[0.0]], [[0]], [[0]])
        except Exception as err:
            print(type(err).__name__, err)
    """, timeout=120)
    assert "MissingExtraError" in run.stdout and "eventlm[nanoaod]" in run.stdout, run.stdout + run.stderr


def test_require_names_the_extra_and_keeps_real_import_errors():
    with pytest.raises(MissingExtraError, match=r"pip install 'eventlm\[plots\]'"):
        require("no_such_package_xyz", "plots", "drawing figures")
    assert require("json", "plots", "x").dumps([1]) == "[1]"
    require_extra("analysis", "eventlm analyze")  # installed here: no error


def test_module_boundaries_hold_in_a_fresh_interpreter(tmp_path):
    """Reading a run config imports no torch; scoring and the analysis never import the training loop."""
    code = textwrap.dedent(f"""
        import sys
        from eventlm.config import RunConfig, load_config, save_config
        save_config(RunConfig(), {str(tmp_path / "run.toml")!r})
        assert load_config({str(tmp_path / "run.toml")!r}) == RunConfig()
        assert "torch" not in sys.modules
        import eventlm.score, eventlm.parallel, eventlm.export, eventlm.analysis.processor, eventlm.analysis.runner
        assert "eventlm.train" not in sys.modules, "score/analysis imported the training loop"
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "ok"  # (some coffea versions print on import)
