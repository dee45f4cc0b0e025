"""Two-process DDP (gloo, CPU) gives the same run as one process with the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

TRAIN_ARGS = ["--preset", "tiny", "--steps", "3", "--num-workers", "0", "--log-every", "1", "--ckpt-every", "3",
              "--image-every", "0", "--device", "cpu", "--no-progress", "--resolution", "32", "--num-novel", "2",
              "--step.loss.perceptual-weight", "0", "--step.loss.point-warmup-steps", "1",
              "--optim.warmup-steps", "1", "--optim.lr", "1e-3"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "diffusiongs.cli.main", *args]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp") / "data"
    subprocess.run(cli("data", "synth", "--out", str(root), "--objects", "6", "--views", "10", "--view-sampling",
                       "random", "--res", "32", "--workers", "1", "--no-progress", "--val-fraction", "0",
                       "--test-fraction", "0"),
                   check=True, capture_output=True)
    return root


def ranks_own_output(stderr: str, limit: int = 6000) -> str:
    """The ranks' own messages, without the launcher's closing summary (the last traceback: a rank's own traceback
    starts the same way and is kept)."""
    own, found, _ = stderr.rpartition("Traceback (most recent call last):\n  File \"<frozen runpy>\"")
    return (own if found else stderr)[-limit:]


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(dataset, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    subprocess.run(cli("train", "--data", str(dataset), "--out", str(single), "--batch-size", "2", *TRAIN_ARGS),
                   check=True, capture_output=True, timeout=300)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
                "diffusiongs.cli.main"]
    # faulthandler: a rank that dies by a signal prints every thread's Python stack before torchrun's summary.
    result = subprocess.run([*torchrun, "train", "--data", str(dataset), "--out", str(ddp), "--batch-size", "1",
                             *TRAIN_ARGS], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert result.returncode == 0, ranks_own_output(result.stderr)
    assert len(losses(ddp)) == 3
    assert losses(ddp) == pytest.approx(losses(single), rel=1e-4)
    final = "checkpoints/step_00000003/model.safetensors"
    a, b = load_file(str(single / final)), load_file(str(ddp / final))
    # Summation order differs between the runs. A gradient entry sums at most ~1e4 float32 terms (132 tokens, each
    # fed by the ~6000 rendered pixels of its sample), so the two runs' gradients differ by a relative
    # rho <= 1e4 u = 6e-4. AdamW's step is at most lr per entry (|m/sqrt(v)| <= 1 for beta1^2 < beta2) and moves by at
    # most 2 rho lr when the gradient moves by rho: 3 steps at lr 1e-3 differ by <= 3.6e-6 (measured: 2.8e-6 with
    # AVX-512 or AVX2, 1.1e-6 with generic kernels on 1 thread). A real difference moves weights by up to 3e-3.
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)
