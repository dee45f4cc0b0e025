"""The shipped demo model, end to end: on procedural objects it never saw (drawn with another seed than its training
set's 0), `evaluate` scores it well above copying the input image to every target view.

The other tests check each part against a reference with small random models; a change that keeps the parts
consistent with each other but breaks what the trained weights expect (camera or ray conventions, the view layout,
the decoding, the evaluation rig) passes them all. It would bring the shipped model down to about copying's score,
which a model that learned no 3D gets: this test is the guard for that."""

from pathlib import Path

import pytest

from diffusiongs.cli.evaluate import EvaluateArgs, run
from diffusiongs.data.capture import OutputConfig
from diffusiongs.data.synth import SynthConfig, run_synth

DEMO_MODEL = Path(__file__).resolve().parents[1] / "diffusiongs" / "assets" / "demo_model"
MARGIN_DB = 2.0
"""Per object. The stage-6 weights are 3.1 to 5.0 dB above copying on these four objects (stage 5's 3.3 to 5.6;
DPM-Solver++ 5 steps, project CPU, 2026-11-30); another summation order (generic ATen kernels, or one thread) moved no
item's PSNR by more than 0.0001 dB there, so the margin is for a worse model, not for another CPU."""


@pytest.fixture(scope="module")
def unseen_objects(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unseen") / "data"
    run_synth(SynthConfig(out=out, objects=4, scenes=0, seed=12345,
                          output=OutputConfig(res=128, workers=1, progress=False, val_fraction=0.0,
                                              test_fraction=1.0)))
    return out


def test_the_demo_model_beats_copying_the_input_on_unseen_objects(unseen_objects, tmp_path):
    shared = {"data": unseen_objects, "checkpoint": DEMO_MODEL, "lpips": False, "device": "cpu", "progress": False}
    model, _ = run(EvaluateArgs(out=tmp_path / "model", sampler="dpmpp2m", steps=5, **shared))
    copy, _ = run(EvaluateArgs(out=tmp_path / "copy", baseline="copy-condition", **shared))
    copied = {item.item_id: item.psnr for item in copy.items}
    assert len(model.items) == len(copied) == 4
    for item in model.items:
        assert item.psnr > copied[item.item_id] + MARGIN_DB, (item.item_id, item.psnr, copied[item.item_id])
