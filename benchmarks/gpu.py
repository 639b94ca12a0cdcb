"""GPU throughput: train the default model for a fixed number of epochs and score 1M events.

    python benchmarks/gpu.py [--objective masked|causal|both] [--score-events 1000000] [--update-docs]

Needs a CUDA device. Trains the default-size model (``RunConfig()`` with only the objective, the
device, the batch size and the epochs set) on the bundled background with bf16 autocast and large
batches, then scores ``--score-events`` events (the bundled background's token sequences drawn with
replacement, seeded) under bf16 autocast with large scoring batches, and prints events/s, token
positions/s and the peak GPU memory of each phase. Runs unattended in well under 5 minutes on an
H200; target: >= 1M events/s scored for the default model.

Without CUDA it prints one line saying so and exits with status 0 (nothing measured, no traceback).
``--device cpu`` runs the same code on the CPU with a few events, as a smoke test of the script.
"""

from __future__ import annotations

import os
import sys

import _report  # first: it takes benchmarks/ off sys.path (io.py, tokenize.py shadow the stdlib)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _positions(objective: str, lengths, n_met: int):
    """Token positions the model computes per event: copies x length (masked), length + 1 (causal)."""
    import numpy as np

    if objective == "causal":
        return lengths + 1
    return np.maximum(lengths - n_met, 0) * lengths


def run_objective(objective: str, args, device: str, tmp: Path) -> dict:
    import numpy as np
    import torch

    from eventlm.batching import jagged_to_flat
    from eventlm.config import RunConfig
    from eventlm.modeldir import ModelDir
    from eventlm.train import train

    on_gpu = device.startswith("cuda")
    config = RunConfig(device=device).replace(
        train={"objective": objective, "epochs": args.epochs, "batch_size": args.batch_size,
               "max_events": args.train_events, "patience": args.epochs + 1})
    model_dir = tmp / f"model_{objective}"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    result = train(config, [args.input], model_dir, progress=False)
    train_peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else float("nan")

    scorer = ModelDir(model_dir).open_scorer(device=device, batch_events=args.score_batch)
    tokens = scorer.tokenizer.encode(_events(args))
    flat, offsets = jagged_to_flat(tokens)
    lengths = np.diff(offsets)
    rng = np.random.default_rng(args.seed)
    pick = rng.integers(0, len(lengths), size=args.score_events)  # resampled events, seeded
    starts = offsets[pick]
    n = lengths[pick]
    new_offsets = np.concatenate([[0], np.cumsum(n)])
    event_of = np.repeat(np.arange(len(n)), n)
    new_flat = flat[starts[event_of] + np.arange(new_offsets[-1]) - new_offsets[event_of]]
    n_met = 0 if scorer._load()["mask_met"] else scorer.tokenizer.n_met_tokens
    positions = float(_positions(objective, n.astype(np.float64), n_met).sum())

    amp = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else contextlib.nullcontext()
    warm = min(len(n), 10_000)
    with amp:
        scorer.score_tokens((new_flat[:new_offsets[warm]], new_offsets[:warm + 1]))  # kernels, allocator
    if on_gpu:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with amp:
        cols = scorer.score_tokens((new_flat, new_offsets))
    if on_gpu:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    assert len(cols["anomaly_score"]) == args.score_events and np.isfinite(cols["anomaly_score"]).all()
    score_peak = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else float("nan")
    n_train = result.metrics.get("n_train") if isinstance(result.metrics, dict) else None
    return {
        "objective": objective, "train_seconds": result.seconds, "epochs": result.epochs_run,
        "train_events": n_train, "train_peak_gib": train_peak,
        "score_events": args.score_events, "score_seconds": seconds, "events_per_s": args.score_events / seconds,
        "tokens_per_s": float(n.sum()) / seconds, "positions_per_s": positions / seconds,
        "score_peak_gib": score_peak,
    }


_EVENTS = None


def _events(args):
    global _EVENTS
    if _EVENTS is None:
        from eventlm.io import read_events

        _EVENTS = read_events(args.input)
    return _EVENTS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", choices=("masked", "causal", "both"), default="both")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N (or cpu for a smoke test)")
    parser.add_argument("--input", default=str(ROOT / "data" / "background.csv.gz"))
    parser.add_argument("--train-events", type=int, default=0, help="0: all the bundled background")
    parser.add_argument("--epochs", type=int, default=3, help="fixed: no early stopping")
    parser.add_argument("--batch-size", type=int, default=4096, help="training batch (events)")
    parser.add_argument("--score-events", type=int, default=1_000_000)
    parser.add_argument("--score-batch", type=int, default=8192, help="events per scoring forward pass")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args(argv)

    try:
        import torch
    except ImportError:  # pragma: no cover
        print("benchmarks/gpu.py: torch is not installed: nothing measured")
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"benchmarks/gpu.py: no CUDA device here (torch {torch.__version__}, "
              f"torch.cuda.is_available() is False): nothing measured. Run it on a machine with a GPU.")
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU (smoke test)"
    objectives = ("masked", "causal") if args.objective == "both" else (args.objective,)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [run_objective(o, args, args.device, Path(tmp)) for o in objectives]
    total = time.perf_counter() - t_all
    md = [
        "## GPU (`benchmarks/gpu.py`)",
        "",
        f"Device: {name}; torch {torch.__version__}. Default-size model trained {args.epochs} epochs "
        f"(batch {args.batch_size}, bf16 autocast) on `{Path(args.input).name}`, then {args.score_events:,} "
        f"resampled events scored (bf16 autocast, {args.score_batch} events per pass). Total {total:.0f} s.",
        "",
        "| objective | train s | train peak GiB | events/s scored | tokens/s | token positions/s | score peak GiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(f"| {r['objective']} | {r['train_seconds']:.1f} | {r['train_peak_gib']:.2f} | "
                  f"**{r['events_per_s']:,.0f}** | {r['tokens_per_s']:,.0f} | {r['positions_per_s']:,.0f} | "
                  f"{r['score_peak_gib']:.2f} |")
    md += ["", "Target: >= 1,000,000 events/s scored on an H200 for the default model. Token positions count "
           "what the model computes: one copy of the event per maskable token (masked), one pass over BOS + "
           "tokens (causal)."]
    _report.publish("gpu", md, update_docs=args.update_docs and args.device.startswith("cuda"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
