"""ONNX export: the scoring graph of a model directory, for the experiments' C++ frameworks.

``export_onnx(model_dir, "model.onnx")`` writes

- ``model.onnx``: one graph from padded token ids to the event's negative log-likelihood terms, with
  the score reduction inside (so CMSSW's ``cms::Ort::ONNXRuntime`` or Athena's ``AthOnnxRuntime``
  only pad the token ids and read the scores back). Both axes are dynamic:

  ========================  =========  ==============  ==========================================
  name                      dtype      shape           meaning
  ========================  =========  ==============  ==========================================
  input ``token_ids``       float32    (batch, tokens) each event's token ids (whole numbers), then 0
                                                       (PAD) up to the longest event of the batch
  output ``nll_sum``        float32    (batch,)        summed NLL = ``anomaly_score_sum``
  output ``nll_mean``       float32    (batch,)        ``nll_sum / n_terms`` (0 for an event with
                                                       nothing to score)
  output ``n_terms``        float32    (batch,)        number of NLL terms of the event
  output ``token_nll``      float32    (batch, terms)  the NLL terms, 0 beyond ``n_terms``
  ========================  =========  ==============  ==========================================

  Every tensor is float32 because CMSSW's ``cms::Ort::ONNXRuntime::run`` takes and returns
  ``FloatArrays`` only; the ids (at most a few thousand) are exact in float32 and the graph casts them
  to int64 itself.

  Masked objective: term i is ``-log p(t_i | event with t_i replaced by MASK)`` for each particle
  token (MET tokens too if the model was trained with ``mask_met``); the graph builds the masked
  copies itself; ``terms = tokens``. Causal objective: the graph prepends BOS and appends EOS; term i
  is ``-log p(t_i | BOS t_1 .. t_{i-1})`` for the n tokens and the stop token; ``terms = tokens + 1``.
  These are exactly the terms of :class:`eventlm.score.Scorer` (``token_nll`` there leaves the
  causal stop term out; ``anomaly_score_sum`` includes it).

- ``preprocess.json``: the whole preprocessing as data (:mod:`eventlm.preprocess`, schema version 2):
  categories, truncation, phi reference, order, bins, token ids, the selection, the object-count term
  and the calibration, with reference vectors (edge cases always, the given events too) to unit-test
  a C++ port against.

torch's dynamo exporter (``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``) traces
the symbolic batch and sequence sizes; the legacy TorchScript exporter bakes in the sample's length.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from eventlm.atomic import atomic_path, write_json

log = logging.getLogger(__name__)

INPUT_NAMES = ("token_ids",)
OUTPUT_NAMES = ("nll_sum", "nll_mean", "n_terms", "token_nll")
#: ONNX opset of the exported graph (ONNX Runtime >= 1.16 runs it; CMSSW 14 ships 1.17).
OPSET = 18


class ScoringGraph(nn.Module):
    """The model plus the score reduction, as one export-friendly module (no data-dependent shapes).

    ``forward(token_ids (B, T) float32 whole numbers, 0-padded) -> (nll_sum (B,), nll_mean (B,),
    n_terms (B,), token_nll (B, T) masked or (B, T+1) causal)``, all float32.
    """

    def __init__(self, model: nn.Module, *, objective: str, n_unmasked_tail: int, mask_id: int,
                 bos_id: int, eos_id: int):
        super().__init__()
        if objective not in ("masked", "causal"):
            raise ValueError(f"unknown objective {objective!r}")
        self.model = model
        self.causal = objective == "causal"
        self.n_unmasked_tail = int(n_unmasked_tail)  # trailing MET tokens that are never masked
        self.mask_id, self.bos_id, self.eos_id = int(mask_id), int(bos_id), int(eos_id)

    def forward(self, token_ids: torch.Tensor):
        ids = torch.round(token_ids).to(torch.int64)  # (B, T)
        return self._causal(ids) if self.causal else self._masked(ids)

    def _masked(self, ids):
        B, T = ids.shape
        length = (ids != 0).sum(dim=1)  # (B,)
        n_terms = torch.clamp(length - self.n_unmasked_tail, min=0)  # (B,)
        pos = torch.arange(T, device=ids.device)  # (T,)
        scored = pos[None, :] < n_terms[:, None]  # (B, T)
        # copy j of event b has position j replaced by MASK: (B, T, T) -> (B*T, T)
        diagonal = torch.eye(T, dtype=torch.bool, device=ids.device)[None, :, :]
        copies = torch.where(diagonal, torch.full_like(ids[:, None, :], self.mask_id), ids[:, None, :])
        copies = copies.reshape(B * T, T)
        where = pos.repeat(B)  # (B*T,): the masked position of each copy
        logits = self.model(copies, copies != 0, where=where)  # (B*T, V)
        logp = F.log_softmax(logits.float(), dim=-1)
        true = ids.reshape(B * T, 1)
        nll = -logp.gather(1, true)[:, 0].reshape(B, T)  # (B, T)
        return self._reduce(torch.where(scored, nll, torch.zeros_like(nll)), n_terms)

    def _causal(self, ids):
        B, T = ids.shape
        length = (ids != 0).sum(dim=1)  # (B,)
        bos = torch.full_like(ids[:, :1], self.bos_id)
        inputs = torch.cat([bos, ids], dim=1)  # (B, T+1): BOS t1 .. tn PAD..
        pos = torch.arange(T + 1, device=ids.device)[None, :]  # (1, T+1)
        targets = torch.cat([ids, torch.zeros_like(ids[:, :1])], dim=1)  # t1 .. tn PAD..
        targets = torch.where(pos == length[:, None], torch.full_like(targets, self.eos_id), targets)
        real = pos <= length[:, None]  # (B, T+1): BOS and the n tokens predict n + 1 terms
        logits = self.model(inputs, real)  # (B, T+1, V)
        logp = F.log_softmax(logits.float(), dim=-1)
        nll = -logp.gather(2, targets[:, :, None])[:, :, 0]  # (B, T+1)
        return self._reduce(torch.where(real, nll, torch.zeros_like(nll)), length + 1)

    @staticmethod
    def _reduce(nll, n_terms):
        total = nll.double().sum(dim=1)  # (B,), summed in float64 as the scorer does
        mean = total / torch.clamp(n_terms, min=1).double()
        return total.float(), mean.float(), n_terms.float(), nll


def scoring_graph(model_dir, which: str = "best") -> tuple[ScoringGraph, object, dict]:
    """``(ScoringGraph in eval mode, tokenizer, checkpoint)`` of a model directory."""
    from eventlm.modeldir import ModelDir

    model, tokenizer, ckpt = ModelDir(model_dir).load(which=which)
    special = tokenizer.special
    mask_met = bool(ckpt["run_config"]["masking"]["mask_met"])
    tail = 0 if mask_met else tokenizer.n_met_tokens
    graph = ScoringGraph(model, objective=ckpt["objective"], n_unmasked_tail=tail, mask_id=special.mask,
                         bos_id=special.bos, eos_id=special.eos)
    return graph.eval(), tokenizer, ckpt


def pad_tokens(tokens) -> np.ndarray:
    """Jagged token ids -> (B, T) int64, 0-padded to the longest event (at least one column)."""
    from eventlm.batching import jagged_to_flat, pad

    flat, offsets = jagged_to_flat(tokens)
    lengths = np.diff(offsets)
    padded, _, _ = pad(flat, lengths, width=max(int(lengths.max(initial=0)), 1))
    return np.asarray(padded, dtype=np.int64)


def export_onnx(model_dir, path, *, preprocess=None, which: str = "best", reference_events=None,
                n_reference: int = 8) -> dict:
    """Write the ONNX scoring graph of ``model_dir`` to ``path`` and its ``preprocess.json``.

    ``preprocess``: the JSON path (default: ``preprocess.json`` beside ``path``; the same path as the
    graph is refused). The JSON always holds the reference vectors of :func:`eventlm.preprocess.
    edge_case_events` (token ids, the graph's outputs and eventlm's score columns); ``reference_events``
    (event model) adds their first ``n_reference``. Returns ``{"onnx": path, "preprocess": path,
    "objective": ...}``.
    """
    from eventlm.errors import EventlmError

    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ModuleNotFoundError:
        raise EventlmError("ONNX export needs the `onnx` extra: pip install 'eventlm[onnx]'") from None
    path = Path(path)
    preprocess = Path(preprocess) if preprocess is not None else path.with_name("preprocess.json")
    if preprocess.resolve() == path.resolve():
        raise EventlmError(f"{path}: the preprocessing JSON and the ONNX graph would be the same file; "
                           "give --preprocess another path")
    graph, tokenizer, ckpt = scoring_graph(model_dir, which)
    if tokenizer.kind != "lut":
        log.warning("%s: the %s tokenizer is a network of its own; preprocess.json holds its parameters but "
                    "not its weights, so a C++ framework cannot tokenize with it from the JSON alone",
                    model_dir, tokenizer.kind)
    n_vocab = tokenizer.vocab_size
    sample = (torch.tensor([[1, 2, 3, 4, 5], [2, 3, 4, 0, 0], [5, 6, 0, 0, 0]]) % (n_vocab - 4) + 1).float()
    sample[1, 3:] = 0
    sample[2, 2:] = 0
    batch, tokens = torch.export.Dim("batch"), torch.export.Dim("tokens")
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            graph, (sample,), dynamo=True, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"token_ids": {0: batch, 1: tokens}}, opset_version=OPSET, verbose=False,
        )
    from eventlm.modeldir import ModelDir

    info = preprocess_info(tokenizer, ckpt, model_dir, which)
    info["weights"] = ModelDir(model_dir).stamp(which)  # the weights this export was made from
    info["reference"] = reference_vectors(model_dir, graph, tokenizer, reference_events, n_reference, which)
    with atomic_path(path) as tmp:
        program.save(str(tmp))
    write_json(preprocess, info)
    log.debug("wrote %s and %s (%s objective)", path, preprocess, ckpt["objective"])
    return {"onnx": path, "preprocess": preprocess, "objective": ckpt["objective"]}


def reference_vectors(model_dir, graph, tokenizer, events=None, n_events: int = 8, which: str = "best") -> dict:
    """Test vectors for a port: the edge cases of :func:`eventlm.preprocess.edge_case_events` and the
    first ``n_events`` of ``events``, with their token ids, the graph's outputs and eventlm's scores."""
    import awkward as ak

    from eventlm.modeldir import ModelDir
    from eventlm.preprocess import edge_case_events

    parts, names = [], []
    edge = edge_case_events(tokenizer)
    if edge is not None:
        parts.append(edge[0])
        names += edge[1]
    if events is not None and n_events:
        parts.append(events[:n_events])
        names += [f"input_{i}" for i in range(len(parts[-1]))]
    if not parts:
        return {"names": [], "events": [], "token_ids": []}
    ref = ak.concatenate(parts) if len(parts) > 1 else parts[0]
    from eventlm.progress import quiet

    with quiet("eventlm.tokenize.particles"):  # the reference events go above max_particles on purpose
        ids = pad_tokens(tokenizer.encode(ref))
        scores = ModelDir(model_dir).open_scorer(which=which, threads=1).score(ref)
    with torch.no_grad():
        total, mean, n_terms, _ = graph(torch.from_numpy(ids.astype(np.float32)))
    out = {
        "names": names,
        "events": [_event_json(ev) for ev in ref.to_list()],
        "token_ids": ids.tolist(),
        "nll_sum": total.numpy().tolist(),
        "nll_mean": mean.numpy().tolist(),
        "n_terms": n_terms.numpy().tolist(),
    }
    for column in ("anomaly_score", "anomaly_score_calibrated"):
        if column in scores:
            out[column] = np.asarray(scores[column], dtype=np.float64).tolist()
    return out


#: Loggers of the exporter's own passes: about a hundred INFO lines per export ("Removed 140 unused
#: nodes", "Skipping constant folding ..."), none of which concerns the user. Kept at WARNING unless -v.
EXPORTER_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo")


@contextlib.contextmanager
def _quiet_exporter():
    """An export without the exporter's chatter: its INFO logging (unless eventlm runs with debug
    logging), what it prints, and two warnings of torch 2.13's exporter that do not concern this graph
    (torchvision ops it cannot register, a deprecated pytree call of its own)."""
    from eventlm.progress import quiet

    debug = logging.getLogger("eventlm").getEffectiveLevel() <= logging.DEBUG
    with quiet("torch.onnx._internal.exporter._registration"), \
            quiet(*(() if debug else EXPORTER_LOGGERS), level=logging.WARNING), warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()) as printed:
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
        yield
    if debug and printed.getvalue().strip():
        log.debug("exporter: %s", printed.getvalue().strip())


def preprocess_info(tokenizer, ckpt, model_dir, which: str = "best") -> dict:
    """The JSON a C++ framework needs to build ``token_ids`` and the scores (docs/export.md), without
    the reference vectors; the calibration is the one of the weights ``which`` (checked: one made from
    other weights is refused)."""
    from eventlm.modeldir import ModelDir
    from eventlm.preprocess import preprocess_spec

    causal = ckpt["objective"] == "causal"
    inputs = {"token_ids": {"dtype": "float32", "shape": ["batch", "tokens"], "pad": tokenizer.special.pad,
                            "note": "whole-number token ids stored as float32 (CMSSW's ONNXRuntime "
                                    "takes float inputs only)"}}
    outputs = {
        "nll_sum": {"dtype": "float32", "shape": ["batch"]},
        "nll_mean": {"dtype": "float32", "shape": ["batch"]},
        "n_terms": {"dtype": "float32", "shape": ["batch"]},
        "token_nll": {"dtype": "float32", "shape": ["batch", "tokens + 1" if causal else "tokens"]},
    }
    return preprocess_spec(tokenizer, ckpt, model_dir, calibration=ModelDir(model_dir).read_calibration(which),
                           inputs=inputs, outputs=outputs)


def _event_json(event: dict) -> dict:
    return {
        "event_id": int(event["event_id"]),
        "met": float(event["met"]),
        "met_phi": float(event["met_phi"]),
        "particles": [{k: (int(p[k]) if k in ("kind", "charge") else float(p[k]))
                       for k in ("kind", "charge", "pt", "eta", "phi", "E")} for p in event["particles"]],
    }


def onnx_scores(path, token_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Run the exported graph with ONNX Runtime (one thread) on padded ``token_ids`` (as float32)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    values = session.run(list(OUTPUT_NAMES), {"token_ids": np.asarray(token_ids, dtype=np.float32)})
    return dict(zip(OUTPUT_NAMES, values))
