"""Per-object explanations: object_nll (one value per object, in the event's own order) plus met_nll,
stop_nll and count_nll add up to anomaly_score_nll (-log p(event)) on every event of the bundled background; the values
follow their objects when the input order changes; they are written to the ntuple; the figure renders."""
# tiny models (1 layer x 16, the paper's 5-bin look-up table, one epoch on the fixture)

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from eventlm.modeldir import ModelDir
from eventlm.score import EXPLANATION_COLUMNS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorers(tmp_path_factory, fixture_events, one_torch_thread):
    from eventlm.config import RunConfig
    from eventlm.train import train

    out = {}
    for objective in ("causal", "masked"):
        d = tmp_path_factory.mktemp(f"explain-{objective}")
        config = RunConfig(seed=5).replace(train={"epochs": 1, "batch_size": 64, "objective": objective},
                                           model={"n_layer": 1, "n_embd": 16, "n_head": 2},
                                           tokenizer={"kind": "lut", "params": {"preset": "paper"}})
        train(config, fixture_events, d, progress=False)
        out[objective] = ModelDir(d).open_scorer(threads=1)
    return out


def _total(cols) -> np.ndarray:
    per_object = ak.to_numpy(ak.sum(ak.values_astype(cols["object_nll"], np.float64), axis=1))
    return per_object + cols["met_nll"] + cols["stop_nll"] + cols["count_nll"].astype(np.float64)


def test_terms_add_up_on_every_background_event(scorers, background_path):
    from eventlm.io import read_events

    events = read_events(background_path)  # all of it
    assert len(events) > 60_000
    cols = scorers["causal"].score(events)
    assert ak.all(ak.num(cols["object_nll"]) == ak.num(events.particles))
    np.testing.assert_allclose(_total(cols), cols["anomaly_score_nll"], rtol=1e-6)
    assert np.all(cols["count_nll"] == 0) and np.all(cols["stop_nll"] > 0) and np.all(cols["met_nll"] > 0)


def test_terms_add_up_for_the_masked_objective(scorers, background_events, make_events):
    events = ak.concatenate([background_events[:1500], make_events(50, seed=4, max_particles=24)])  # some empty, some truncated
    cols = scorers["masked"].score(events)
    np.testing.assert_allclose(_total(cols), cols["anomaly_score_nll"], rtol=1e-6)
    assert np.all(cols["stop_nll"] == 0) and np.all(cols["count_nll"] > 0)
    assert np.all(cols["met_nll"] == 0)  # trained without mask_met: the MET tokens are not scored
    # objects beyond max_particles (the softest) carry no term
    limit = scorers["masked"].tokenizer.max_particles
    n = ak.num(events.particles)
    big = ak.to_numpy(n > limit)
    assert big.any()
    assert ak.all(ak.sum(cols["object_nll"][big] == 0, axis=1) >= n[big] - limit)


def test_each_value_follows_its_object(scorers, background_events):
    """object_nll[i] belongs to particles[i]: reversing the objects of every event reverses it."""
    events = background_events[:300]
    events = events[ak.num(events.particles) <= 18]  # no truncation
    cols = scorers["causal"].score(events)
    flipped = ak.with_field(events, events.particles[:, ::-1], "particles")
    cols_flipped = scorers["causal"].score(flipped)
    np.testing.assert_array_equal(cols_flipped["anomaly_score"], cols["anomaly_score"])
    assert ak.all(cols_flipped["object_nll"] == cols["object_nll"][:, ::-1])
    # and it is the term of the object's token: the token order maps back to the objects
    order = scorers["causal"].tokenizer.particle_order(events)
    n_particle_tokens = ak.num(order)
    token_terms = cols["token_nll"][ak.local_index(cols["token_nll"]) < n_particle_tokens]
    assert ak.all(cols["object_nll"][order] == token_terms)


def test_explanations_are_written_and_drawn(scorers, fixture_path, fixture_events, tmp_path):
    import uproot

    from eventlm.plotting.explain import plot_event_explanation
    from eventlm.apply import score_files

    scorer = scorers["causal"]
    score_files(scorer.model_dir, fixture_path, tmp_path / "s.root", scorer=scorer)
    with uproot.open(tmp_path / "s.root") as f:
        t = f["Events"].arrays(["nParticle", "object_nll", *EXPLANATION_COLUMNS[1:], "anomaly_score_nll"])
    assert ak.all(ak.num(t["object_nll"]) == t["nParticle"])
    total = ak.sum(t["object_nll"], axis=1) + t["met_nll"] + t["stop_nll"] + t["count_nll"]
    np.testing.assert_allclose(ak.to_numpy(total), ak.to_numpy(t["anomaly_score_nll"]), rtol=1e-5)
    i = int(np.argmax(ak.to_numpy(t["anomaly_score_nll"])))
    terms = {k: t[k][i] for k in (*EXPLANATION_COLUMNS, "anomaly_score_nll")}
    path = plot_event_explanation(fixture_events[i], terms, tmp_path / "explain.png")
    assert path.stat().st_size > 20_000
