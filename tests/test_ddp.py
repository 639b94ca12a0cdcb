"""DistributedDataParallel: a tiny run with two CPU processes on gloo under torchrun; its sharded,
summed validation loss equals one process's on the same weights (the split of batches between
ranks is tested in test_batching)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def test_two_gloo_processes_train_and_rank0_writes(fixture_path, tmp_path):
    out = tmp_path / "ddp"
    config = tmp_path / "run.toml"
    config.write_text("[model]\nn_embd = 32\nn_head = 2\n\n[train]\nbatch_size = 32\nwarmup_steps = 2\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = torchrun() + ["--standalone", "--nproc_per_node", "2", "-m", "eventlm", "train", str(fixture_path),
                        "--out", str(out), "--epochs", "2", "--config", str(config), "--no-progress"]
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        pytest.skip("torchrun is not available")
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epoch"] == [1, 2]
    assert all(v == v for v in metrics["val_loss"])  # not NaN
    for name in ("checkpoint.pt", "best.pt", "tokenizer.json", "split.json", "loss.png"):
        assert (out / name).exists()
    assert not list(out.glob(".*tmp*"))

    from eventlm.batching import BucketBatchSampler, Collator, TokenDataset
    from eventlm.config import RunConfig
    from eventlm.io import read_events
    from eventlm.modeldir import ModelDir
    from eventlm.train import VALIDATION_EPOCH, Dist, evaluate

    md = ModelDir(out)
    scores = md.open_scorer().score(read_events(fixture_path, max_events=20))
    assert len(scores["anomaly_score"]) == 20
    # the validation loss the two ranks summed over their shards is the one process's loss on the
    # whole validation split, with the same weights (best.pt)
    model, tokenizer, ckpt = md.load(which="best")
    run = RunConfig.from_dict(ckpt["run_config"])
    validation = TokenDataset(tokenizer.encode(md.select(read_events(fixture_path), "validation", complete=True)))
    collator = Collator(tokenizer.special, objective=run.train.objective, masking=run.masking,
                        n_met_tokens=tokenizer.n_met_tokens, seed=run.seed)
    sampler = BucketBatchSampler(validation.lengths, run.train.batch_size, seed=run.seed, shuffle=False,
                                 bucket_batches=run.train.bucket_batches)
    sampler.set_epoch(VALIDATION_EPOCH)
    one_process = evaluate(model, validation, collator, sampler, "cpu", Dist())
    assert one_process == pytest.approx(metrics["val_loss"][metrics["best_epoch"] - 1], rel=1e-5)
