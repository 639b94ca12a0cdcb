"""The learned tokenizers (VQ-VAE, graph VQ): interface, persistence, masks, and learning on background."""

from __future__ import annotations

import json

import awkward as ak
import numpy as np
import pytest
import torch

from eventlm.errors import CheckpointMismatchError, TokenizationError
from eventlm.tokenize import get_tokenizer, load_tokenizer
from eventlm.tokenize.graph import GraphAttentionLayer, edge_features, knn_adjacency

KINDS = ["vqvae", "graph"]
SMALL = dict(codebook_size=32, latent_dim=8, hidden=32, batch_size=128, patience=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def small_events():
    from conftest import random_events

    return random_events(400, seed=21)


@pytest.fixture(scope="module", params=KINDS)
def trained(request, small_events):
    return get_tokenizer(request.param, seed=3, **SMALL).fit(small_events, epochs=2, progress=False)


def test_id_layout_is_codebook_then_met_bins(trained, small_events):
    tok = trained
    assert tok.n_content == 32 + 10 and tok.vocab_size == 46 and tok.n_met_tokens == 2
    tokens = tok.encode(small_events)
    assert str(tokens.type).endswith("var * int64")
    assert ak.to_list(ak.num(tokens)) == ak.to_list(np.minimum(ak.num(small_events.particles), 18) + 2)
    particles = ak.to_numpy(ak.flatten(tokens[:, :-2]))
    assert particles.min() >= 1 and particles.max() <= 32
    assert ak.all(tokens[:, -2] > 32) and ak.all(tokens[:, -2] <= 37)
    assert ak.all(tokens[:, -1] > 37) and ak.all(tokens[:, -1] <= 42)


def test_decode_gives_event_model_particles_and_met(trained, small_events):
    tokens = trained.encode(small_events[:20])
    decoded = trained.decode(tokens)
    assert ak.to_list(ak.num(decoded.particles)) == ak.to_list(ak.num(tokens) - 2)
    assert set(decoded.particles.fields) == {"kind", "charge", "pt", "eta", "phi", "E"}
    assert np.all(np.isfinite(ak.to_numpy(decoded.met)))
    assert ak.all(decoded.particles.pt > 0) and ak.all(np.abs(decoded.particles.phi) <= np.pi + 1e-5)
    with pytest.raises(TokenizationError, match="cannot decode"):
        trained.decode([[trained.special.mask]])


def test_save_load_round_trip_gives_same_encodings(trained, small_events, tmp_path):
    path = trained.save(tmp_path / "model" / "tokenizer.json")
    assert (tmp_path / "model" / "tokenizer.weights.pt").exists()
    payload = json.loads(path.read_text())
    assert payload["kind"] == trained.kind and payload["params"]["codebook_size"] == 32
    back = load_tokenizer(path, expected_kind=trained.kind)
    assert ak.to_list(back.encode(small_events)) == ak.to_list(trained.encode(small_events))
    assert back.fingerprint() == trained.fingerprint()


def test_load_rejects_missing_or_foreign_weights(trained, tmp_path, small_events):
    path = trained.save(tmp_path / "a" / "tokenizer.json")
    other = get_tokenizer(trained.kind, seed=4, **SMALL).fit(small_events, epochs=1, progress=False)
    other_path = other.save(tmp_path / "b" / "tokenizer.json")
    (tmp_path / "a" / "tokenizer.weights.pt").write_bytes((tmp_path / "b" / "tokenizer.weights.pt").read_bytes())
    with pytest.raises(CheckpointMismatchError, match="weights differ"):
        load_tokenizer(path)
    (tmp_path / "a" / "tokenizer.weights.pt").unlink()
    with pytest.raises(CheckpointMismatchError, match="weights file is missing"):
        load_tokenizer(path)
    with pytest.raises(CheckpointMismatchError, match="expected 'lut'"):
        load_tokenizer(other_path, expected_kind="lut")


@pytest.mark.parametrize("kind", KINDS)
def test_one_seed_makes_training_reproducible(kind, small_events):
    a = get_tokenizer(kind, seed=7, **SMALL).fit(small_events[:300], epochs=1, progress=False)
    b = get_tokenizer(kind, seed=7, **SMALL).fit(small_events[:300], epochs=1, progress=False)
    assert a.fingerprint() == b.fingerprint()
    assert ak.to_list(a.encode(small_events[:50])) == ak.to_list(b.encode(small_events[:50]))


def test_encoding_does_not_depend_on_batch_size_or_padding(trained, small_events):
    """Graph: padding masks keep an event's tokens independent of the events batched with it."""
    some = small_events[:120]
    full = ak.to_list(trained.encode(some))
    trained.batch_size, saved = 13, trained.batch_size
    try:
        assert ak.to_list(trained.encode(some)) == full
        alone = [ak.to_list(trained.encode(some[i:i + 1]))[0] for i in (0, 5, 17)]
    finally:
        trained.batch_size = saved
    assert alone == [full[0], full[5], full[17]]


def test_encode_before_fit_and_unknown_option_are_errors(small_events):
    with pytest.raises(TokenizationError, match="not fitted"):
        get_tokenizer("vqvae").encode(small_events[:3])
    with pytest.raises(TypeError, match="unknown fit option"):
        get_tokenizer("vqvae", **SMALL).fit(small_events, epochs=1, progress=False, colour="red")


def test_graph_attention_stays_on_knn_edges():
    torch.manual_seed(0)
    kin = torch.tensor([[[0.0, 0.0, 4.0], [0.1, 0.0, 4.0], [2.0, 2.0, 4.0], [0.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, True, True, False]])
    edges = edge_features(kin)
    adj = knn_adjacency(edges[..., 2], mask, k=2)
    # particle 0's two nearest are itself and particle 1; padding is never a neighbour
    assert adj[0, 0].tolist() == [True, True, False, False]
    assert not adj[0, :, 3].any() and not adj[0, 3].any()
    layer = GraphAttentionLayer(8, heads=2).eval()
    h = torch.randn(1, 4, 8)
    out = layer(h, edges, adj)
    h2 = h.clone()
    h2[0, 2] += 5.0  # change the far particle and the padding slot
    h2[0, 3] -= 3.0
    out2 = layer(h2, edges, adj)
    torch.testing.assert_close(out[0, :2], out2[0, :2])  # 0 and 1 do not listen to 2 or to padding
    assert not torch.allclose(out[0, 2], out2[0, 2])


# ---- learning on the bundled background ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "n_train", "n_check", "batch_size", "epochs", "recon_drop", "usage", "accuracy", "pt_resolution"),
    [("vqvae", 4000, 2000, 256, 6, 0.35, 0.75, 0.95, 0.5), ("graph", 2000, 1000, 64, 4, 0.5, 0.7, 0.9, None)],
)
def test_learned_tokenizer_learns_background_and_uses_most_codes(
    background_events, kind, n_train, n_check, batch_size, epochs, recon_drop, usage, accuracy, pt_resolution
):
    tok = get_tokenizer(kind, codebook_size=64, seed=1, batch_size=batch_size).fit(
        background_events[:n_train], epochs=epochs, progress=False)
    start, best = tok.history[0]["val_recon"], min(h["val_recon"] for h in tok.history[1:])
    assert best < recon_drop * start, tok.history
    report = tok.resolution_report(background_events[4000:4000 + n_check])
    assert report["usage_fraction"] >= usage, report
    assert report["category_accuracy"] > accuracy, report
    if pt_resolution is not None:
        assert report["pt_rel_resolution"] < pt_resolution, report


def test_fit_overrides_of_the_id_layout_are_kept_and_reload(small_events, tmp_path):
    """Regression: fit(n_met=10) wrote a tokenizer that refused to load; fit(met_tokens=False) still
    reported two MET tokens."""
    events = small_events[:300]
    more = get_tokenizer("vqvae", seed=3, **SMALL).fit(events, epochs=1, progress=False, n_met=10)
    assert more.met.n_met == 10 and more.n_content == more.codebook_size + 10 + more.n_met_phi
    back = load_tokenizer(more.save(tmp_path / "more.json"))
    assert back.n_content == more.n_content
    assert ak.to_list(back.encode(events)) == ak.to_list(more.encode(events))
    none = get_tokenizer("vqvae", seed=3, **SMALL).fit(events, epochs=1, progress=False, met_tokens=False)
    assert none.n_met_tokens == 0 and none.n_content == none.codebook_size
    assert ak.to_list(ak.num(none.encode(events))) == ak.to_list(ak.num(events.particles))
