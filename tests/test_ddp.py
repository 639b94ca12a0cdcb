"""DistributedDataParallel: a tiny run with two CPU processes on gloo under torchrun."""

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

    from eventlm.modeldir import ModelDir
    from eventlm.io import read_events

    scores = ModelDir(out).open_scorer().score(read_events(fixture_path, max_events=20))
    assert len(scores["anomaly_score"]) == 20
