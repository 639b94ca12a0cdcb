"""Shared fixtures.

- ``make_events``: well-formed random events in the event model (for shape, parser and edge-case tests);
- ``bundled_*``: the Pythia samples committed in ``data/`` (physics tests use these);
- ``real_file``: the real experiment files committed in ``tests/data/`` (CMS NanoAOD, ATLAS PHYSLITE;
  origin and licence in tests/data/README.md). Nothing is read from outside the repository.
"""

from __future__ import annotations

import logging
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

from eventlm.events import Kind, make_events as _make_events, make_particles

ROOT_DIR = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT_DIR / "data"
TEST_DATA = ROOT_DIR / "tests" / "data"

CHARGED = {int(Kind.ELECTRON), int(Kind.MUON)}


def random_events(n: int = 100, *, seed: int = 0, max_particles: int = 12, process="ttbar", start_id=0):
    """Random events with physical ranges (pt > 20 GeV, |eta| < 2.7, phi in [-pi, pi]), some empty."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, max_particles + 1, size=n)
    total = int(counts.sum())
    kind = rng.choice(np.array([0, 0, 0, 1, 2, 3, 4]), size=total).astype(np.int8)
    charge = np.where(np.isin(kind, list(CHARGED)), rng.choice([-1, 1], size=total), 0).astype(np.int8)
    pt = (20.0 + rng.exponential(60.0, size=total)).astype(np.float32)
    eta = rng.uniform(-2.7, 2.7, size=total).astype(np.float32)
    phi = rng.uniform(-np.pi, np.pi, size=total).astype(np.float32)
    mass = np.where(kind <= 1, rng.uniform(2.0, 15.0, size=total), 0.0)
    E = np.sqrt((pt * np.cosh(eta)) ** 2 + mass**2).astype(np.float32)
    particles = make_particles(kind, charge, pt, eta, phi, E, counts)
    return _make_events(
        event_id=np.arange(start_id, start_id + n),
        process=process,
        weight=rng.uniform(0.5, 2.0, size=n),
        met=rng.exponential(80.0, size=n).astype(np.float32),
        met_phi=rng.uniform(-np.pi, np.pi, size=n).astype(np.float32),
        particles=particles,
    )


STUDY_TOML = """
[study]
name = "toy"
{study}
[inputs]
background = ["{background}"]
[inputs.signals]
{signal_name} = ["{signal}"]

[regions.CR]
selection = "{cr}"
[regions.SR]
{sr}

[threshold]
method = "{method}"
background_efficiency = 0.05
{threshold}
[metrics]
n_bootstrap = {n_bootstrap}

[baselines]
names = [{baselines}]
{more}"""


def study_toml(*, background, signal, signal_name="sig", cr="n_jets <= 3", sr='selection = "n_jets >= 4"',
               method="background_efficiency", threshold="", n_bootstrap="5", baselines="", study="", more="") -> str:
    """The text of a toy analysis TOML (``eventlm analyze``); values go in as written, so a test can
    put a wrong one in."""
    return STUDY_TOML.format(background=background, signal=signal, signal_name=signal_name, cr=cr, sr=sr,
                             method=method, threshold=threshold, n_bootstrap=n_bootstrap, baselines=baselines,
                             study=study, more=more)


def scored_study(folder: Path, *, n_ttbar: int, n_wjets: int, n_signal: int, signal: str = "tttt_H500",
                 signal_max_particles: int = 12) -> dict:
    """A toy study written as scored ROOT ntuples: background (ttbar + w_jets) with anomaly_score ~
    N(3, 1) and one signal with N(4, 1). ``{"paths": {name: path}, "events": {name: events}}``."""
    from eventlm.io import write_events

    rng = np.random.default_rng(0)
    bkg = ak.concatenate([random_events(n_ttbar, seed=1, process="ttbar"),
                          random_events(n_wjets, seed=2, process="w_jets", start_id=5000)])
    sig = random_events(n_signal, seed=3, process=signal, start_id=9000, max_particles=signal_max_particles)
    paths = {}
    for name, events, mu in (("background", bkg, 3.0), (signal, sig, 4.0)):
        score = rng.normal(mu, 1.0, len(events)).astype(np.float32)
        paths[name] = write_events(events, folder / f"{name}.root", extra_columns={"anomaly_score": score})
    return {"paths": paths, "events": {"background": bkg, signal: sig}}


def tiny_config(objective: str = "masked"):
    """The smallest explicit run config (look-up-table tokenizer, one layer of 16, one epoch): no test
    depends on today's default tokenizer or objective."""
    from eventlm.config import RunConfig

    return RunConfig(seed=5).replace(
        tokenizer={"kind": "lut", "params": {}},
        model={"n_embd": 16, "n_head": 2, "n_layer": 1},
        train={"objective": objective, "epochs": 1, "batch_size": 64, "warmup_steps": 2},
    )


def tiny_causal_model(tmp_path_factory, events) -> Path:
    """A tiny causal model directory with its sampling table (what ``eventlm sample`` needs)."""
    from eventlm.sample import prepare_sampling

    model = trained_model(tmp_path_factory, tiny_config("causal"), events)
    prepare_sampling(model, events)
    return model


def trained_model(tmp_path_factory, config, events, name: str = "model") -> Path:
    """A model directory trained with ``config`` on ``events`` in a fresh temporary folder."""
    from eventlm.train import train

    out = tmp_path_factory.mktemp(name)
    train(config, events, out, progress=False)
    return out


@pytest.fixture
def make_events():
    return random_events


def _committed(folder: Path, name: str) -> Path:
    """A file the repository commits (``data/`` or ``tests/data/``): a missing one is an error, not a skip."""
    path = folder / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: it is committed to the repo ({folder.name}/)")
    return path


def _bundled(name: str) -> Path:
    return _committed(DATA_DIR, name)


@pytest.fixture(scope="session")
def fixture_path() -> Path:
    """The tiny committed fixture: a few hundred background and signal events."""
    return _bundled("fixture.csv.gz")


@pytest.fixture(scope="session")
def background_path() -> Path:
    return _bundled("background.csv.gz")


@pytest.fixture(scope="session")
def signal_paths() -> dict[str, Path]:
    return {name: _bundled(f"{name}.csv.gz") for name in ("gluino_1000", "tttt_H500")}


def real_file(name: str) -> Path:
    """A real experiment file committed in ``tests/data/`` (see its README)."""
    return _committed(TEST_DATA, name)


@pytest.fixture(scope="session")
def nanoaod_path() -> Path:
    """200 events of CMS Open Data NanoAOD (2015 ttbar simulation), TTree ``Events``."""
    return real_file("nanoAOD_2015_CMS_Open_Data_ttbar.root")


@pytest.fixture(scope="session")
def fixture_events(fixture_path):
    from eventlm.io import read_events

    return read_events(fixture_path)


@pytest.fixture(scope="session")
def background_events(background_path):
    """The first 20k events of the bundled background (enough to train small models in tests)."""
    from eventlm.io import read_events

    return read_events(background_path, max_events=20_000)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's tests, then the previous setting: on a shared machine several
    threads per process spin-wait in OpenMP (training the VQ tokenizers was 16x slower with two)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def assert_same_events(a: ak.Array, b: ak.Array, *, rtol=1e-5, atol=1e-3):
    """Events equal field by field (floats up to formatting); order and count must match exactly."""
    assert len(a) == len(b)
    np.testing.assert_array_equal(ak.to_numpy(a.event_id), ak.to_numpy(b.event_id))
    assert ak.to_list(a.process) == ak.to_list(b.process)
    for f in ("weight", "met", "met_phi"):
        np.testing.assert_allclose(ak.to_numpy(a[f]), ak.to_numpy(b[f]), rtol=rtol, atol=atol)
    np.testing.assert_array_equal(ak.to_numpy(ak.num(a.particles)), ak.to_numpy(ak.num(b.particles)))
    for f in ("kind", "charge"):
        np.testing.assert_array_equal(
            ak.to_numpy(ak.flatten(a.particles[f])), ak.to_numpy(ak.flatten(b.particles[f]))
        )
    for f in ("pt", "eta", "phi", "E"):
        np.testing.assert_allclose(
            ak.to_numpy(ak.flatten(a.particles[f])), ak.to_numpy(ak.flatten(b.particles[f])),
            rtol=rtol, atol=atol,
        )


def one_error(capsys, argv, *needles):
    """Run ``eventlm argv``: exit status 2, one ``eventlm ...`` error line holding every needle, no traceback."""
    from eventlm.cli import main

    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.startswith("eventlm ")]
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(autouse=True)
def _eventlm_log_levels_restored():
    """A test that holds eventlm's loggers down (or the CLI that sets them) leaves them as it found
    them: a level left at ERROR silenced the warnings that later tests assert (caplog saw nothing)."""
    loggers = [logging.getLogger(name) for name in ("eventlm", *logging.root.manager.loggerDict)
               if name == "eventlm" or name.startswith("eventlm.")]
    levels = [lg.level for lg in loggers]
    yield
    for lg, level in zip(loggers, levels):
        lg.setLevel(level)
