"""How far apart and how deep the cameras of scene samples are, in the normalised scene frame (docs/scenes.md).

Compares the cameras a scene model sees in three places, on the camera paths of `data synth` scenes (item k of
seed s, exactly as `data synth` draws it, meshes built but not rendered):

* training samples: 1 + N + M frames chosen by a view layout (the demo model's: orbit) and normalised together;
* the evaluation protocol: frames 0, 4, 8, 12, normalised together;
* `generate`'s named orbit trajectory at several steps.

For each it prints the frames' offsets from the condition, the largest turn from the condition to a noisy view, and
the depth of the point the rig's cameras look at (least-squares meeting point of their optical axes) seen from the
condition camera, in normalised units.

    python benchmarks/scene_camera_stats.py --clips 40 --draws 5
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from diffusiongs.data import procedural
from diffusiongs.data.normalize import normalize_scene_cameras
from diffusiongs.data.view_selection import select_views
from diffusiongs.geometry import Cameras, ViewLayout
from diffusiongs.geometry.camera import angle_between_deg
from diffusiongs.inference.scene import trajectory_path


def look_at_depth(rig: Cameras) -> float:
    """Depth along the condition camera's axis of the point nearest to every optical axis of the rig."""
    centers, forwards = rig.centers.double(), rig.forward.double()
    projectors = torch.eye(3, dtype=torch.float64) - forwards[:, :, None] * forwards[:, None, :]
    point = torch.linalg.solve(projectors.sum(0), (projectors @ centers[:, :, None]).sum(0))[:, 0]
    return float((point - centers[0]) @ forwards[0])


def describe(rigs: list[Cameras], offsets: list[list[int]] | None) -> str:
    depth = np.percentile([look_at_depth(r) for r in rigs], [10, 50, 90])
    turn = np.percentile([float(angle_between_deg(r.forward[:1], r.forward[1:]).max()) for r in rigs], [10, 50, 90])
    text = f"look-at depth {depth[1]:.2f} ({depth[0]:.2f}-{depth[2]:.2f}), largest turn {turn[1]:.1f} deg " \
           f"({turn[0]:.1f}-{turn[2]:.1f})"
    if offsets is not None:
        gaps = np.percentile(np.abs(offsets), [10, 50, 90])
        text += f", noisy frames {gaps[1]:.0f} ({gaps[0]:.0f}-{gaps[2]:.0f}) frames from the condition"
    return text + "  [median (10th-90th percentile)]"


def normalized(cameras: Cameras, frames: list[int]) -> Cameras:
    chosen = cameras[torch.tensor(frames)]
    return Cameras(normalize_scene_cameras(chosen.c2w)[0], chosen.K, chosen.width, chosen.height)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=40, help="scenes 0..clips-1 of the dataset seed")
    parser.add_argument("--seed", type=int, default=0, help="`data synth --seed` (the demo model trained on 0)")
    parser.add_argument("--views", type=int, default=32)
    parser.add_argument("--draws", type=int, default=5, help="training samples drawn per clip")
    parser.add_argument("--num-noisy", type=int, default=3)
    parser.add_argument("--num-novel", type=int, default=3, help="M of the training run (demo model: 3)")
    parser.add_argument("--layout", default="orbit", choices=["orbit", "constrained", "random"])
    args = parser.parse_args()

    train, offsets, protocol = [], [], []
    for k in range(args.clips):
        rng = np.random.default_rng([args.seed, 1, k])  # data synth's draw of scene k
        _, cameras, _ = procedural.random_scene(rng, args.views, 128)
        # Readers hand the training dataset the whole clip normalised (NativeReader), as here.
        clip = Cameras(normalize_scene_cameras(cameras.c2w)[0], cameras.K, cameras.width, cameras.height)
        for draw in range(args.draws):
            chosen = select_views(clip, args.num_noisy, args.num_novel, ViewLayout(mode=args.layout),
                                  np.random.default_rng([k, draw])).indices
            train.append(normalized(clip, chosen)[: 1 + args.num_noisy])
            offsets.append([f - chosen[0] for f in chosen[1:1 + args.num_noisy]])
        protocol.append(normalized(clip, [0, 4, 8, 12]))
    print(f"{args.clips} clips of `data synth --seed {args.seed}`:")
    print(f"  training samples ({args.layout} layout, {args.draws} draws a clip): {describe(train, offsets)}")
    print(f"  evaluation protocol (frames 0, 4, 8, 12): {describe(protocol, None)}")
    for step in (4.0, 8.0, 12.0, 16.0):
        rig = trajectory_path("orbit", args.num_noisy, 128, 128, 60.0, step).normalized().rig_cameras
        print(f"  generate --orbit-step {step:g}: look-at depth {look_at_depth(rig):.2f}, "
              f"largest turn {args.num_noisy * step:g} deg")


if __name__ == "__main__":
    main()
