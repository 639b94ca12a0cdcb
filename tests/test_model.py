"""The transformer: shapes, padding, the masked and causal objectives, and the one loss (token_nll)
that training, validation and scoring share; sampling is tested with its production code (test_sample)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from eventlm.model import PAD, EventTransformer, ModelConfig, token_nll
from eventlm.tokenize.base import PAD as TOKENIZER_PAD, SpecialTokens
from eventlm.runtime import torch_threads

SPECIAL = SpecialTokens(885)


def model(**kwargs) -> EventTransformer:
    torch.manual_seed(0)
    return EventTransformer(ModelConfig(vocab_size=SPECIAL.vocab_size, **kwargs)).eval()


def test_special_ids_agree_with_tokenizer():
    config = ModelConfig(vocab_size=SPECIAL.vocab_size)
    assert PAD == TOKENIZER_PAD
    assert (config.mask_id, config.bos_id, config.eos_id) == (SPECIAL.mask, SPECIAL.bos, SPECIAL.eos)


@pytest.mark.parametrize("position", ["rotary", "learned", "none"])
@pytest.mark.parametrize("normformer", [False, True])
def test_logits_shape_and_where(position, normformer):
    m = model(position=position, normformer=normformer)
    idx = torch.randint(1, 876, (3, 7))
    logits = m(idx)  # (B, T, V)
    assert logits.shape == (3, 7, SPECIAL.vocab_size)
    where = torch.zeros(3, 7, dtype=torch.bool)
    where[0, 2] = where[2, 5] = True
    torch.testing.assert_close(m(idx, where=where), logits[where])
    pos = torch.tensor([1, 0, 6])
    torch.testing.assert_close(m(idx, where=pos), logits[torch.arange(3), pos])


def test_all_padding_event_gives_no_nan():
    m = model()
    idx = torch.zeros(2, 5, dtype=torch.long)
    idx[1, :3] = torch.tensor([5, 6, 880])
    logits = m(idx)
    assert torch.isfinite(logits[..., 1:SPECIAL.n_content + 1]).all()
    mc = model(causal=True)
    assert torch.isfinite(mc(idx)[..., 1:SPECIAL.n_content + 1]).all()


def test_padding_does_not_change_the_real_tokens_outputs():
    m = model()
    idx = torch.tensor([[5, 6, 7, 880, 884]])
    padded = torch.cat([idx, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    torch.testing.assert_close(m(padded)[:, :5], m(idx), atol=1e-5, rtol=1e-5)


def test_causal_attention_ignores_the_future():
    m = model(causal=True)
    a = torch.tensor([[SPECIAL.bos, 5, 6, 7]])
    b = torch.tensor([[SPECIAL.bos, 5, 6, 100]])
    torch.testing.assert_close(m(a)[:, :3], m(b)[:, :3])
    assert not torch.allclose(model()(a)[:, :3], model()(b)[:, :3])


def test_special_tokens_are_never_predicted():
    logits = model()(torch.randint(1, 876, (2, 4)))
    for banned in (PAD, SPECIAL.mask, SPECIAL.bos, SPECIAL.eos):
        assert torch.isneginf(logits[..., banned]).all()
    causal = model(causal=True)(torch.randint(1, 876, (2, 4)))
    assert torch.isfinite(causal[..., SPECIAL.eos]).all()


def _batch(inputs, targets):
    from eventlm.batching import Batch

    n = len(inputs)
    return Batch(inputs, targets, inputs != PAD, torch.arange(n), (inputs != PAD).sum(1), 0)


def test_token_nll_is_minus_the_log_probability_of_each_target():
    logits = torch.randn(5, SPECIAL.vocab_size, dtype=torch.float64)
    targets = torch.tensor([1, 7, 3, 880, 2])
    expected = -torch.log(torch.softmax(logits, dim=-1))[torch.arange(5), targets]
    torch.testing.assert_close(token_nll(logits, targets), expected.float())


def test_batch_loss_backward_and_empty_target_batch():
    """The training loss (eventlm.train.batch_loss: the mean token_nll over the targets)."""
    from eventlm.train import batch_loss

    m = model().train()
    idx = torch.randint(1, 876, (4, 6))
    targets = torch.full_like(idx, -100)
    targets[:, 1] = idx[:, 1]
    inputs = idx.clone()
    inputs[:, 1] = SPECIAL.mask
    loss, n = batch_loss(m, _batch(inputs, targets))
    assert n == 4 and torch.isfinite(loss)
    m.eval()
    with torch.no_grad():
        logits = m(inputs, inputs != PAD)[:, 1]  # (4, V): every row's masked position
    torch.testing.assert_close(batch_loss(m, _batch(inputs, targets))[0], token_nll(logits, idx[:, 1]).mean())
    m.train()
    loss.backward()
    none, n = batch_loss(m, _batch(inputs, torch.full_like(idx, -100)))
    assert n == 0 and none.item() == 0.0


def test_head_loss_is_the_weighted_sum_of_token_nll_of_the_logits():
    """The fused head (eventlm.model.head_loss: chunks of HEAD_CHUNK rows, the gradient formed in the
    forward pass) against the logits + token_nll it replaces: value and both gradients, over several
    chunks and signed weights; the banned ids stay impossible; under no_grad it forms no gradient."""
    from eventlm.model import HEAD_CHUNK, head_loss

    torch.manual_seed(1)
    n = 2 * HEAD_CHUNK + 37  # a partial last chunk
    h = torch.randn(n, 16, requires_grad=True)
    weight = (0.3 * torch.randn(SPECIAL.vocab_size, 16)).requires_grad_()
    banned = torch.zeros(SPECIAL.vocab_size, dtype=torch.bool)
    banned[[PAD, SPECIAL.mask, SPECIAL.bos]] = True
    targets = torch.randint(1, SPECIAL.n_content + 1, (n,))
    weights = torch.randn(n)  # signed, as [train] event_weights = "signed" gives them
    logits = (h @ weight.t()).masked_fill(banned, float("-inf"))
    expected = (weights * token_nll(logits, targets)).sum()
    h_grad, weight_grad = torch.autograd.grad(expected, (h, weight))
    fused = head_loss(h, weight, banned, targets, weights)
    torch.testing.assert_close(fused, expected)
    fused_h_grad, fused_weight_grad = torch.autograd.grad(3.0 * fused, (h, weight))  # the upstream grad scales
    torch.testing.assert_close(fused_h_grad, 3.0 * h_grad)
    torch.testing.assert_close(fused_weight_grad, 3.0 * weight_grad)
    with torch.no_grad():
        plain = head_loss(h, weight, banned, targets)
    assert not plain.requires_grad
    torch.testing.assert_close(plain, token_nll(logits, targets).sum().detach())
    targets[0] = SPECIAL.bos  # a banned id has probability 0
    assert torch.isinf(head_loss(h, weight, banned, targets)).item()


@pytest.mark.parametrize("objective", ["masked", "causal"])
def test_fused_training_step_equals_the_reference_step(objective):
    """batch_loss fused (the default: head_loss and the fused attention) against the reference (the
    logits, torch's attention, token_nll), in training mode with the same dropout draws: the same loss
    and the same gradient of every parameter, unweighted and with event weights."""
    from eventlm.batching import BatchKey, Collator, TokenDataset
    from eventlm.train import batch_loss

    torch.manual_seed(0)
    m = EventTransformer(ModelConfig(vocab_size=SPECIAL.vocab_size, n_embd=32, n_head=4,
                                     causal=objective == "causal")).train()
    lengths = torch.randint(0, 12, (48,)).tolist()
    dataset = TokenDataset([torch.randint(1, SPECIAL.n_content + 1, (n,)).tolist() for n in lengths])
    batch = Collator(SPECIAL, objective=objective)(dataset.__getitems__(BatchKey(range(48), 0)))
    event_weights = torch.rand(48) * 2 - 0.5
    for weights in (None, event_weights):
        results = []
        for fused in (False, True):
            torch.manual_seed(7)  # the same dropout masks on both paths
            loss, n = batch_loss(m, batch, weights, fused=fused)
            grads = torch.autograd.grad(loss, list(m.parameters()))
            results.append((loss, n, grads))
        (ref, n_ref, ref_grads), (fused, n_fused, fused_grads) = results
        assert n_ref == n_fused > 0
        torch.testing.assert_close(fused, ref)
        for a, b in zip(fused_grads, ref_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_overfits_a_tiny_masked_problem():
    """The last token is a function of the first: a working encoder learns it with the training loss."""
    from eventlm.train import batch_loss

    torch.manual_seed(0)
    m = EventTransformer(ModelConfig(vocab_size=SPECIAL.vocab_size, dropout=0.0))
    opt = m.configure_optimizer(3e-3, 0.0)
    first = torch.randint(1, 20, (256,))
    idx = torch.stack([first, torch.randint(1, 876, (256,)), first + 100], dim=1)
    inputs = idx.clone()
    inputs[:, 2] = SPECIAL.mask
    targets = torch.full_like(idx, -100)
    targets[:, 2] = idx[:, 2]
    with torch_threads(1):
        for _ in range(150):
            loss, _ = batch_loss(m, _batch(inputs, targets))
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert loss.item() < 0.5


def test_config_is_frozen_and_validated():
    config = ModelConfig(vocab_size=10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.n_layer = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=10, n_embd=30, n_head=4)
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=10, position="sinusoidal")


def test_model_module_never_imports_awkward():
    """model.py takes integer tensors: it imports neither awkward nor the tokenizers."""
    import ast
    import inspect

    import eventlm.model

    tree = ast.parse(inspect.getsource(eventlm.model))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] in ("awkward", "eventlm")}
