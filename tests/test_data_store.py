"""This project's dataset format, its reader, and the training datasets on top of it (no GL needed)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import tyro

from diffusiongs.cli.main import entrypoint
from diffusiongs.cli.train import TrainArgs, build_dataset
from diffusiongs.data.dataset import MixedDataset, MultiViewDataset, SampleConfig, check_view_counts, dataloader
from diffusiongs.data.store import (
    NativeReader,
    RenderedViews,
    build_manifest,
    is_complete,
    item_dir,
    read_json,
    read_manifest,
    split_of,
    write_item,
)
from diffusiongs.data.types import TrainingBatch
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras, look_at, orbit_cameras, random_sphere_cameras, ring_cameras
from diffusiongs.geometry.layout import ViewLayout


def fake_views(views: int, res: int, seed: int, rgba: bool = True, depth: bool = False,
               cameras: Cameras | None = None) -> RenderedViews:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(views, res, res, 4 if rgba else 3), dtype=np.uint8)
    if cameras is None:
        cameras = random_sphere_cameras(views, 3.0, 50.0, res, generator=torch.Generator().manual_seed(seed))
    depths = rng.uniform(0.5, 4.0, size=(views, res, res)).astype(np.float32) if depth else None
    return RenderedViews(pixels, cameras, ("train",) * (views - 2) + ("eval",) * 2, depths)


def make_dataset(root, objects: int = 4, scenes: int = 0, views: int = 12, res: int = 32, depth: bool = False):
    for k in range(objects):
        write_item(item_dir(root, "object", f"obj{k}"), f"obj{k}", "object", fake_views(views, res, k, depth=depth),
                   depth_unit=1e-4)
    for k in range(scenes):
        eyes = torch.stack([torch.linspace(-1, 1, views), torch.zeros(views), torch.full((views,), 1.5)], -1)
        targets = eyes + torch.tensor([0.0, 3.0, -0.3])
        cams = Cameras(look_at(eyes, targets), orbit_cameras(views, 1, 0, 60, res).K, res, res)
        write_item(item_dir(root, "scene", f"scene{k}"), f"scene{k}", "scene",
                   fake_views(views, res, 100 + k, rgba=False, cameras=cams))
    return build_manifest(root, val_fraction=0.0, test_fraction=0.0)


def test_item_round_trip_keeps_pixels_cameras_and_depth(tmp_path):
    views = fake_views(6, 16, 0, depth=True)
    write_item(tmp_path / "objects" / "a", "a", "object", views, depth_unit=1e-4)
    build_manifest(tmp_path, 0.0, 0.0)
    reader = NativeReader(tmp_path, groups=("train", "eval"))
    example = reader.load(0)
    alpha = views.pixels[..., 3:4] / 255.0
    expected = torch.from_numpy(views.pixels[..., :3] / 255.0 * alpha + (1 - alpha)).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(example.images, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(example.masks[:, 0], torch.from_numpy(views.pixels[..., 3] / 255.0).float())
    torch.testing.assert_close(example.cameras.c2w, views.cameras.c2w)
    torch.testing.assert_close(example.cameras.K, views.cameras.K)
    # uint16 steps of 1e-4 units: depth comes back within half a step.
    assert (example.depths[:, 0] - torch.from_numpy(views.depths)).abs().max() <= 0.5e-4 + 1e-6
    assert example.domain == "object" and example.item_id == "a"


def test_groups_select_training_or_evaluation_views(tmp_path):
    make_dataset(tmp_path, objects=1, views=8)
    assert NativeReader(tmp_path).cameras(0).batch_shape[0] == 6
    assert NativeReader(tmp_path, groups=("eval",)).cameras(0).batch_shape[0] == 2
    assert NativeReader(tmp_path, groups=("train", "eval")).cameras(0).batch_shape[0] == 8


def test_load_subset_is_in_the_requested_order(tmp_path):
    make_dataset(tmp_path, objects=1)
    reader = NativeReader(tmp_path)
    full = reader.load(0)
    part = reader.load(0, [5, 1, 3])
    torch.testing.assert_close(part.images, full.images[[5, 1, 3]])
    torch.testing.assert_close(part.cameras.c2w, full.cameras.c2w[[5, 1, 3]])


def test_scenes_have_unit_masks_and_normalised_cameras(tmp_path):
    make_dataset(tmp_path, objects=0, scenes=1)
    example = NativeReader(tmp_path, domain="scene").load(0)
    assert example.domain == "scene"
    assert torch.all(example.masks == 1)
    assert example.cameras.centers.mean(0).abs().max() < 1e-5
    assert example.cameras.centers.abs().max() == pytest.approx(1 / 1.35, rel=1e-5)


def test_unfinished_items_are_not_in_the_manifest(tmp_path):
    make_dataset(tmp_path, objects=2)
    (tmp_path / "objects" / "half" / "images").mkdir(parents=True)
    (tmp_path / "objects" / "half" / "images" / "00000.png").write_bytes(b"partial")
    manifest = build_manifest(tmp_path, 0.0, 0.0)
    assert sorted(manifest.items) == ["obj0", "obj1"]
    assert not is_complete(tmp_path / "objects" / "half")
    assert read_manifest(tmp_path).splits == manifest.splits


def test_a_shard_reindexes_by_reading_only_new_items_and_keeps_stated_splits(tmp_path, monkeypatch):
    import diffusiongs.data.store as store

    make_dataset(tmp_path, objects=2)
    write_item(item_dir(tmp_path, "object", "held"), "held", "object", fake_views(6, 16, 7), meta={"split": "test"})
    build_manifest(tmp_path, 0.0, 0.0)  # a first run's index: reads all three
    write_item(item_dir(tmp_path, "object", "new"), "new", "object", fake_views(6, 16, 8))
    reads = []
    monkeypatch.setattr(store, "read_json", lambda path: reads.append(path.parent.name) or read_json(path))
    reused = build_manifest(tmp_path, 0.0, 0.0, reuse=True)
    assert reads == [tmp_path.name, "new"]  # the old manifest (in the root), then the one new item
    assert reused.splits == {"train": ["new", "obj0", "obj1"], "val": [], "test": ["held"]}
    reads.clear()
    assert build_manifest(tmp_path, 0.0, 0.0).splits == reused.splits  # `data manifest`: every item read again
    assert sorted(reads) == ["held", "new", "obj0", "obj1"]


def test_splits_are_stable_hashes_with_the_requested_shares():
    ids = [f"item{k}" for k in range(4000)]
    splits = [split_of(i, 0.1, 0.05) for i in ids]
    assert splits == [split_of(i, 0.1, 0.05) for i in ids]
    assert splits.count("val") == pytest.approx(400, abs=80)
    assert splits.count("test") == pytest.approx(200, abs=60)


def test_missing_manifest_and_broken_cameras_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="manifest.json: no manifest"):
        NativeReader(tmp_path)
    make_dataset(tmp_path, objects=1)
    (tmp_path / "objects" / "obj0" / "cameras.json").write_text(json.dumps({"views": [{"c2w": 1}]}))
    with pytest.raises(InputError, match="obj0/cameras.json: malformed"):
        NativeReader(tmp_path).cameras(0)


def test_training_samples_are_ordered_resized_and_collate(tmp_path):
    make_dataset(tmp_path, objects=3, views=16, res=32, depth=True)
    config = SampleConfig(resolution=16, num_noisy=3, num_novel=4, layout=ViewLayout(mode="random"))
    dataset = MultiViewDataset(NativeReader(tmp_path), config)
    example = dataset[0]
    assert example.images.shape == (8, 3, 16, 16) and example.masks.shape == (8, 1, 16, 16)
    assert example.depths.shape == (8, 1, 16, 16)
    assert example.cameras.width == 16 and example.cameras.K[0, 0, 0] == pytest.approx(16 / 2 / np.tan(np.radians(25)))
    batch = dataset.collate([dataset[i] for i in range(3)])
    assert isinstance(batch, TrainingBatch)
    assert batch.images.shape == (3, 8, 3, 16, 16) and batch.num_noisy == 3 and batch.num_novel == 4
    assert batch.depths.shape == (3, 8, 1, 16, 16) and batch.masks.shape == (3, 8, 1, 16, 16)
    assert batch.is_object.all()


def test_selected_views_match_the_reader_views(tmp_path):
    """The sample's view k is the reader's view selection[k] (same image and camera), at the same resolution."""
    make_dataset(tmp_path, objects=1, views=12, res=16)
    reader = NativeReader(tmp_path)
    config = SampleConfig(resolution=16, num_noisy=2, num_novel=2, relative_azimuth=False)
    dataset = MultiViewDataset(reader, config)
    example = dataset[0]
    full = reader.load(0)
    for k in range(5):
        match = [v for v in range(10) if torch.equal(full.cameras.c2w[v], example.cameras.c2w[k])]
        assert len(match) == 1
        torch.testing.assert_close(example.images[k], full.images[match[0]])


def test_samples_depend_on_seed_epoch_and_index_only(tmp_path):
    make_dataset(tmp_path, objects=2, views=20, res=16)
    dataset = MultiViewDataset(NativeReader(tmp_path), SampleConfig(resolution=16, num_noisy=3, num_novel=3))
    first = dataset[1].cameras.c2w
    torch.testing.assert_close(MultiViewDataset(NativeReader(tmp_path), dataset.config)[1].cameras.c2w, first)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1].cameras.c2w, first)


def test_broken_items_are_skipped_and_logged(tmp_path, caplog):
    make_dataset(tmp_path, objects=2, views=12, res=16)
    (tmp_path / "objects" / "obj0" / "cameras.json").write_text("{broken")
    reader = NativeReader(tmp_path)
    dataset = MultiViewDataset(reader, SampleConfig(resolution=16, num_noisy=2, num_novel=0))
    broken = [reader.item_id(i) for i in range(2)].index("obj0")
    assert dataset[broken].item_id == "obj1"
    assert "skipping obj0" in caplog.text and "cameras.json: not valid JSON" in caplog.text


def test_train_refuses_items_with_too_few_views_before_training(tmp_path, capsys):
    make_dataset(tmp_path / "data", objects=3, views=10, res=16)  # 8 training views + 2 evaluation views each
    code = entrypoint(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err == (f"diffusiongs train: error: {tmp_path / 'data'}: items have 8 training views, a sample needs "
                   "1 + 3 noisy + 6 novel = 10; lower --num-novel (or --num-noisy) or re-render the items with more "
                   "--views")
    assert not (tmp_path / "run").exists()


def write_objects(root, views: list[int]) -> None:
    for k, count in enumerate(views):
        write_item(item_dir(root, "object", f"obj{k}"), f"obj{k}", "object", fake_views(count + 2, 16, k))
    build_manifest(root, val_fraction=0.0, test_fraction=0.0)


def test_a_few_short_items_are_logged_and_most_short_items_refused(tmp_path, caplog):
    sample = SampleConfig(resolution=16, num_noisy=3, num_novel=2)  # 6 views a sample
    write_objects(tmp_path / "mostly_fine", [8, 4, 6, 9])
    check_view_counts(MultiViewDataset(NativeReader(tmp_path / "mostly_fine"), sample), "mostly_fine")
    assert "mostly_fine: 1 of 4 checked items are unreadable or have fewer than 6 training views" in caplog.text
    write_objects(tmp_path / "mostly_short", [8, 4, 5, 3])
    with pytest.raises(InputError, match=r"mostly_short: only 1 of 4 checked items are usable \(0 unreadable, 3 with "
                                         r"fewer than 6 training views; a sample needs 1 \+ 3 noisy \+ 2 novel = 6\)"):
        check_view_counts(MultiViewDataset(NativeReader(tmp_path / "mostly_short"), sample), "mostly_short")
    write_objects(tmp_path / "all_short", [4, 5, 3])
    with pytest.raises(InputError, match="all_short: items have at most 5 training views"):
        check_view_counts(MultiViewDataset(NativeReader(tmp_path / "all_short"), sample), "all_short")


def test_items_without_exact_orbit_rigs_are_named_before_orbit_training(tmp_path, caplog):
    sample = SampleConfig(resolution=16, num_noisy=3, num_novel=2)  # the orbit layout, the default
    write_objects(tmp_path / "random", [12, 12, 12])  # random viewpoints: no view set is an exact orbit rig
    check_view_counts(MultiViewDataset(NativeReader(tmp_path / "random"), sample), "random")
    assert "random: only 0 of 3 checked items hold an exact orbit rig" in caplog.text
    caplog.clear()
    rings = ring_cameras(2, 8, 3.0, 50.0, 16, torch.Generator().manual_seed(0), (0.0, 40.0))  # the last 2: eval
    for k in range(3):
        write_item(item_dir(tmp_path / "rings", "object", f"obj{k}"), f"obj{k}", "object",
                   fake_views(16, 16, k, cameras=rings))
    build_manifest(tmp_path / "rings", val_fraction=0.0, test_fraction=0.0)
    check_view_counts(MultiViewDataset(NativeReader(tmp_path / "rings"), sample), "rings")
    assert "exact orbit rig" not in caplog.text
    constrained = replace(sample, layout=ViewLayout(mode="constrained"))
    check_view_counts(MultiViewDataset(NativeReader(tmp_path / "random"), constrained), "random")
    assert "exact orbit rig" not in caplog.text  # only the orbit layout asks for them


def test_scene_samples_are_renormalised(tmp_path):
    make_dataset(tmp_path, objects=0, scenes=1, views=10, res=16)
    dataset = MultiViewDataset(NativeReader(tmp_path, domain="scene"),
                               SampleConfig(resolution=16, num_noisy=3, num_novel=3,
                                            layout=ViewLayout(mode="random")))
    cams = dataset[0].cameras
    assert cams.centers.mean(0).abs().max() < 1e-5
    assert cams.centers.abs().max() == pytest.approx(1 / 1.35, rel=1e-5)


def test_mixed_dataset_draws_domains_at_the_set_ratio(tmp_path):
    make_dataset(tmp_path, objects=3, scenes=2, views=10, res=16)
    config = SampleConfig(resolution=16, num_noisy=2, num_novel=2, layout=ViewLayout(mode="random"))
    objects = MultiViewDataset(NativeReader(tmp_path, domain="object"), config)
    scenes = MultiViewDataset(NativeReader(tmp_path, domain="scene"), config)
    mixed = MixedDataset([objects, scenes], weights=[3, 1], length=400)
    domains = [mixed[i].domain for i in range(400)]
    assert domains.count("object") == pytest.approx(300, abs=40)
    batch = next(iter(dataloader(mixed, batch_size=8, workers=0)))
    assert batch.images.shape == (8, 5, 3, 16, 16) and batch.is_object.shape == (8,)
    with pytest.raises(ValueError, match="disagree"):
        MixedDataset([objects, MultiViewDataset(scenes.reader, SampleConfig(resolution=8))], [1, 1])


def test_dataloader_workers_give_the_same_samples(tmp_path):
    make_dataset(tmp_path, objects=4, views=12, res=16)
    dataset = MultiViewDataset(NativeReader(tmp_path), SampleConfig(resolution=16, num_noisy=2, num_novel=2))
    serial = next(iter(dataloader(dataset, batch_size=4, workers=0, shuffle=False)))
    parallel = next(iter(dataloader(dataset, batch_size=4, workers=2, shuffle=False)))
    torch.testing.assert_close(serial.images, parallel.images)
    torch.testing.assert_close(serial.cameras.c2w, parallel.cameras.c2w)


def test_mixed_dataset_draws_fresh_views_for_repeated_items(tmp_path):
    make_dataset(tmp_path, objects=1, views=20, res=16)
    dataset = MultiViewDataset(NativeReader(tmp_path), SampleConfig(resolution=16, num_noisy=3, num_novel=3,
                                                                    layout=ViewLayout(mode="random")))
    mixed = MixedDataset([dataset], weights=[1], length=10)
    views = {tuple(mixed[i].cameras.c2w[:, 0, 3].tolist()) for i in range(10)}
    assert len(views) > 5


def test_condition_azimuth_frame_puts_the_condition_camera_at_azimuth_zero():
    from diffusiongs.data.normalize import condition_azimuth_frame
    from diffusiongs.geometry import random_sphere_cameras

    cams = random_sphere_cameras(5, 3.0, 50.0, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rotated = condition_azimuth_frame(cams.c2w)
    assert rotated[0, 1, 3].abs() < 1e-9 and rotated[0, 0, 3] > 0
    # A rotation about z: heights, distances and relative geometry are unchanged.
    assert torch.allclose(rotated[:, 2, 3], cams.c2w[:, 2, 3])
    assert torch.allclose(rotated[:, :3, 3].norm(dim=-1), cams.c2w[:, :3, 3].norm(dim=-1))
    rel = torch.linalg.inv(cams.c2w[0]) @ cams.c2w
    rel_rotated = torch.linalg.inv(rotated[0]) @ rotated
    assert torch.allclose(rel, rel_rotated, atol=1e-9)


def test_train_draws_scene_frames_at_random_and_objects_by_the_models_layout(tmp_path):
    make_dataset(tmp_path, objects=2, scenes=2, views=12)
    args = tyro.cli(TrainArgs, args=["--data", str(tmp_path), "--scene-data", str(tmp_path), "--preset", "tiny",
                                     "--num-novel", "2", "--layout.mode", "constrained"])
    mixed = build_dataset(args)
    layouts = {d.domain: d.config.layout.mode for d in mixed.datasets}
    assert layouts == {"object": "constrained", "scene": "random"}
