"""The method learns: a tiny model trained by the real `train` path beats copying the input image on its own training
objects, scored by the real `evaluate` path (issue: train and generate agree on their cameras).

The run keeps the defaults that matter here (the view layout recorded by `train` and read back by `evaluate`, the
EMA with its warm-up) and shrinks the rest (a tiny model at 16 px, three objects, 150 steps, no perceptual loss) to
fit the default suite. Measured on the project's 2-core machine (2026-11-29): 16.98 dB against 15.27 dB for the copy
baseline, ~20 s in all. With the earlier defaults (`--layout.mode constrained`, EMA 0.9999 without warm-up, scored on
the orbit rig as `evaluate` then did) the same run scores 8.94 dB, so this test fails on them.
"""

import json
from pathlib import Path

from diffusiongs.cli.main import entrypoint

MARGIN_DB = 0.5
"""Well inside the measured 1.7 dB gap, and far above the run-to-run change from float32 summation order."""


def psnr_of(report: Path) -> float:
    return json.loads((report / "summary.json").read_text())["metrics"]["psnr"]


def test_a_tiny_model_beats_copying_the_input_on_its_training_objects(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    assert entrypoint(["data", "synth", "--out", str(data), "--objects", "3", "--views", "8", "--orbit-views", "8",
                       "--res", "16", "--seed", "0", "--val-fraction", "0", "--test-fraction", "0", "--workers", "1",
                       "--no-progress"]) == 0
    assert entrypoint(["train", "--preset", "tiny", "--data", str(data), "--out", str(run), "--steps", "150",
                       "--batch-size", "2", "--num-novel", "2", "--num-workers", "0", "--optim.lr", "2e-3",
                       "--optim.warmup-steps", "20", "--step.loss.point-warmup-steps", "20",
                       "--step.loss.perceptual-weight", "0", "--no-progress"]) == 0
    common = ["--data", str(data), "--split", "train", "--no-lpips", "--no-progress"]
    assert entrypoint(["evaluate", "--checkpoint", str(run), "--steps", "5", "--out", str(tmp_path / "model"),
                       *common]) == 0
    assert entrypoint(["evaluate", "--baseline", "copy-condition", "--checkpoint", str(run),
                       "--out", str(tmp_path / "copy"), *common]) == 0
    model, copy = psnr_of(tmp_path / "model"), psnr_of(tmp_path / "copy")
    assert model > copy + MARGIN_DB, f"model {model:.2f} dB, copy-condition {copy:.2f} dB"
