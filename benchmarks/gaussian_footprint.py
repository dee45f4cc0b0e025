"""How large and how many of a trained model's Gaussians the renderer draws at each sampling step.

Rendering cost grows with the Gaussians that pass the 1/255 opacity cut and with the screen tiles each covers, so
speed measured on random weights (every Gaussian visible, of standard deviation 0.1 world units) says little about
a trained model. This records, per DDIM step, the fraction of Gaussians above the cut and quantiles of their largest
standard deviation in pixels (largest scale x focal / depth, in the first noisy view) for one input image:

    python benchmarks/gaussian_footprint.py --out benchmarks/results/gaussian_footprint_demo.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusiongs.inference.pipeline import DEFAULT_MODEL_DIR, GenerateConfig, Pipeline  # noqa: E402
from diffusiongs.inference.preprocess import PreprocessConfig, prepare_condition_image  # noqa: E402
from diffusiongs.render.config import ALPHA_MIN  # noqa: E402

QUANTILES = (0.1, 0.5, 0.9, 0.99)


def footprint(gaussians, w2c: torch.Tensor, focal: float) -> dict:
    """Visible fraction and quantiles of the largest standard deviation (pixels) of unbatched Gaussians seen by one
    camera."""
    visible = gaussians.opacities > ALPHA_MIN
    depth = (gaussians.means @ w2c[:3, :3].T + w2c[:3, 3])[:, 2]
    sigma = gaussians.scales.max(-1).values * focal / depth
    q = torch.quantile(sigma[visible].float(), torch.tensor(QUANTILES)).tolist() if visible.any() else []
    return {"visible_fraction": visible.float().mean().item(),
            "sigma_px_quantiles": dict(zip(map(str, QUANTILES), q))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_MODEL_DIR))
    parser.add_argument("--image", default="examples/images/office-chair.jpg")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.checkpoint, device=args.device)
    condition = prepare_condition_image(args.image, pipe.cfg.resolution, PreprocessConfig())
    cameras = pipe.rig_cameras()
    w2c, focal = cameras.w2c()[1].float(), cameras.K[1, 0, 0].item()
    steps = []
    predict = pipe.model.predict_gaussians

    def recording(*a, **k):
        pred = predict(*a, **k)
        steps.append(footprint(pred.gaussians[0].float(), w2c, focal))
        return pred

    pipe.model.predict_gaussians = recording
    pipe.generate_from_condition(condition.rgb, cameras, GenerateConfig())
    report = {"checkpoint": args.checkpoint, "image": args.image, "resolution": pipe.cfg.resolution,
              "device": args.device, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "command": " ".join(["python", *sys.argv]), "steps": steps}
    Path(args.out).write_text(json.dumps(report, indent=2))
    for i, step in enumerate(steps):
        q = step["sigma_px_quantiles"]
        print(f"step {i:2d}: visible {100 * step['visible_fraction']:.1f} %, sigma px "
              + " / ".join(f"{float(v):.2f}" for v in q.values()))


if __name__ == "__main__":
    main()
