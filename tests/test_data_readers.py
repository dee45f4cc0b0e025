"""Readers for public layouts, on tiny fixtures built here from the layouts' public descriptions
(docs/data.md, reference §5)."""

import io
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from diffusiongs.cli.main import entrypoint
from diffusiongs.data import gobjaverse
from diffusiongs.data.colmap import read_model
from diffusiongs.data.convert import ConvertConfig, run_convert
from diffusiongs.data.dl3dv import ColmapSceneReader
from diffusiongs.data.gobjaverse import GObjaverseReader
from diffusiongs.data.images import center_crop_square, resize_example
from diffusiongs.data.mvimgnet import MVImgNetReader
from diffusiongs.data.normalize import normalize_scene_cameras
from diffusiongs.data.re10k import Re10kChunkReader, Re10kJsonReader
from diffusiongs.data.sources import SourceConfig
from diffusiongs.data.store import NativeReader
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras, look_at, orbit_cameras, transform_world
from diffusiongs.geometry.rays import pixel_rays


def png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def relative_pose(c2w: torch.Tensor, i: int, j: int) -> torch.Tensor:
    return torch.linalg.inv(c2w[i].double()) @ c2w[j].double()


def assert_scene_normalised(cams: Cameras, original_c2w: torch.Tensor) -> None:
    """Mean centre at the origin, largest |t| = 1/1.35, and relative poses preserved up to that scale."""
    assert cams.centers.mean(0).abs().max() < 1e-5
    assert float(cams.centers.abs().max()) == pytest.approx(1 / 1.35, rel=1e-5)
    scale = float((cams.centers[1] - cams.centers[0]).norm() / (original_c2w[1, :3, 3] - original_c2w[0, :3, 3]).norm())
    for i, j in [(0, 1), (2, 5), (4, 3)]:
        mine, theirs = relative_pose(cams.c2w, i, j), relative_pose(original_c2w, i, j)
        torch.testing.assert_close(mine[:3, :3], theirs[:3, :3], atol=1e-5, rtol=0)
        torch.testing.assert_close(mine[:3, 3], theirs[:3, 3] * scale, atol=1e-5, rtol=0)


def walk_cameras(n: int, res_w: int, res_h: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A forward walk with some yaw (c2w, K in pixels)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    eyes = torch.stack([4 * t, torch.sin(3 * t), 1.5 + 0.1 * t], -1) + torch.randn(3, generator=g, dtype=torch.float64)
    targets = eyes + torch.stack([torch.cos(t), torch.sin(t) + 1, -0.2 * torch.ones_like(t)], -1)
    K = torch.tensor([[0.9 * res_w, 0, 0.5 * res_w], [0, 1.2 * res_h, 0.48 * res_h], [0, 0, 1]], dtype=torch.float64)
    return look_at(eyes, targets), K.expand(n, 3, 3).clone()


# ----------------------------------------------------------------------------------------------- normalisation

def test_scene_normalisation_removes_any_similarity_transform():
    c2w, _ = walk_cameras(9, 64, 36, 0)
    rotation = torch.from_numpy(Rotation.random(random_state=3).as_matrix())
    moved = transform_world(c2w, rotation, torch.tensor([4.0, -2.0, 7.0], dtype=torch.float64), 3.7)
    a, scale_a = normalize_scene_cameras(c2w)
    b, scale_b = normalize_scene_cameras(moved)
    torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
    assert scale_a == pytest.approx(3.7 * scale_b)
    # The world frame is the mean camera: its mean forward axis is +z and its mean down axis lies in the y-z plane.
    forward = torch.nn.functional.normalize(a[:, :3, 2].mean(0), dim=0)
    torch.testing.assert_close(forward, torch.tensor([0.0, 0.0, 1.0]), atol=1e-5, rtol=0)
    assert abs(float(a[:, 0, 1].mean())) < 1e-5


# ----------------------------------------------------------------------------------------------- G-Objaverse

def make_gobjaverse(root: Path, uids: list[str], res: int = 32, distance: float = 1.6) -> dict:
    """40 views like G-Objaverse's: 24 on a ring (elevation 20), top (25) and bottom (26), 14 lower views."""
    ring = orbit_cameras(24, distance, 20.0, 40.0, res)
    low = orbit_cameras(14, distance, 0.0, 40.0, res, start_azimuth_deg=7.0)
    poles = look_at(torch.tensor([[0.01, 0.0, distance], [0.01, 0.0, -distance]]))
    c2w = torch.cat([ring.c2w[:24], poles, low.c2w]).double()
    rng = np.random.default_rng(0)
    for uid in uids:
        for idx in range(40):
            folder = root / uid / "campos_512_v4" / f"{idx:05d}"
            folder.mkdir(parents=True)
            camera = {"x": c2w[idx, :3, 0].tolist(), "y": c2w[idx, :3, 1].tolist(), "z": c2w[idx, :3, 2].tolist(),
                      "origin": c2w[idx, :3, 3].tolist()}
            (folder / f"{idx:05d}.json").write_text(json.dumps(camera))
            (folder / f"{idx:05d}.png").write_bytes(png_bytes(rng.integers(0, 256, (res, res, 4), dtype=np.uint8)))
            (folder / f"{idx:05d}_nd.exr").write_bytes(b"\x76\x2f\x31\x01")
    return {"c2w": c2w}


def test_gobjaverse_cameras_images_and_intrinsics(tmp_path):
    fixture = make_gobjaverse(tmp_path / "renders", ["0/10010", "1/22"])
    (tmp_path / "train.json").write_text(json.dumps(["0/10010", "1/22"]))
    reader = GObjaverseReader(tmp_path / "renders", tmp_path / "train.json")
    assert len(reader) == 2 and reader.item_id(1) == "1/22"
    cams = reader.cameras(0)
    assert cams.batch_shape == (38,)  # the top and bottom views are left out
    expected = fixture["c2w"][[i for i in range(40) if i not in (25, 26)]].clone()
    expected[:, :3, 3] *= 3.0 / 1.6
    torch.testing.assert_close(cams.c2w.double(), expected, atol=1e-5, rtol=0)
    assert cams.K[0, 0, 0].item() == pytest.approx(1422.222 / 1024 * 32)
    assert cams.K[0, 0, 2].item() == 16.0
    example = reader.load(0, [3, 30])
    raw = np.asarray(Image.open(tmp_path / "renders/0/10010/campos_512_v4/00003/00003.png"), dtype=np.float32) / 255
    expected_rgb = raw[..., :3] * raw[..., 3:] + 1 - raw[..., 3:]
    torch.testing.assert_close(example.images[0], torch.from_numpy(expected_rgb).permute(2, 0, 1), atol=1e-6, rtol=0)
    torch.testing.assert_close(example.cameras.c2w, cams.c2w[[3, 30]])
    assert example.depths is None


def test_gobjaverse_depth_is_skipped_with_a_note_without_an_exr_reader(tmp_path, monkeypatch, caplog):
    make_gobjaverse(tmp_path, ["a"])
    monkeypatch.setattr(gobjaverse, "read_exr", lambda path: None)
    caplog.set_level("INFO")
    example = GObjaverseReader(tmp_path, ["a"], load_depth=True).load(0, [0, 1])
    assert example.depths is None
    assert caplog.text.count("no EXR reader") == 1


def test_gobjaverse_depth_converts_ray_distance_to_scaled_z(tmp_path, monkeypatch):
    """A wall at camera z = 1.2 (raw units): ray distances 1.2 / cos; pixels nearer than the object bound are
    background."""
    make_gobjaverse(tmp_path, ["a"], distance=1.6)
    reader = GObjaverseReader(tmp_path, ["a"], load_depth=True)
    cam = reader.cameras(0)[0]
    _, directions = pixel_rays(cam)
    cosine = (directions * cam.forward).sum(-1).numpy()
    distance = 1.2 / cosine
    distance[:4] = 0.5  # < 1.6 - 0.867: background
    normal_depth = np.concatenate([np.zeros((32, 32, 3), np.float32), distance[..., None]], -1)
    monkeypatch.setattr(gobjaverse, "read_exr", lambda path: normal_depth)
    depth = reader.load(0, [0]).depths[0, 0]
    assert torch.all(depth[:4] == 0)
    torch.testing.assert_close(depth[4:], torch.full_like(depth[4:], 1.2 * 3.0 / 1.6), atol=1e-5, rtol=0)


def test_gobjaverse_bad_camera_files_are_input_errors(tmp_path):
    make_gobjaverse(tmp_path, ["a", "b"])
    (tmp_path / "a/campos_512_v4/00003/00003.json").write_text(json.dumps({"x": [1, 0, 0]}))
    with pytest.raises(InputError, match="00003.json: expected keys x, y, z, origin"):
        GObjaverseReader(tmp_path, ["a"]).cameras(0)
    path = tmp_path / "b/campos_512_v4/00000/00000.json"
    camera = json.loads(path.read_text())
    camera["x"] = [-v for v in camera["x"]]
    path.write_text(json.dumps(camera))
    with pytest.raises(InputError, match="not a right-handed"):
        GObjaverseReader(tmp_path, ["b"]).cameras(0)


# ----------------------------------------------------------------------------------------------- RealEstate10K

def make_re10k(root: Path, scenes: int = 3, frames: int = 8, width: int = 64, height: int = 36) -> dict:
    """pixelSplat chunks (two files) and the official processed-json layout of the same scenes."""
    rng = np.random.default_rng(0)
    truth, chunk_entries = {}, [[], []]
    for s in range(scenes):
        key = f"{s:016x}"
        c2w, K = walk_cameras(frames, width, height, s)
        w2c = torch.linalg.inv(c2w)
        rows = torch.cat([torch.stack([K[:, 0, 0] / width, K[:, 1, 1] / height, K[:, 0, 2] / width,
                                       K[:, 1, 2] / height], -1), torch.zeros(frames, 2),
                          w2c[:, :3].reshape(frames, 12)], -1).float()
        jpegs = [png_bytes(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "JPEG") for _ in range(frames)]
        chunk_entries[s % 2].append({"key": key, "url": f"https://youtube.example/{key}",
                                     "timestamps": torch.arange(frames) * 33366,
                                     "cameras": rows, "images": [torch.frombuffer(bytearray(j), dtype=torch.uint8)
                                                                 for j in jpegs]})
        # process_data.py layout; image paths relative to a working directory that is not ours
        (root / "json/test/images" / key).mkdir(parents=True)
        frame_records = []
        for i, jpeg in enumerate(jpegs):
            (root / "json/test/images" / key / f"{i:05d}.png").write_bytes(
                png_bytes(np.asarray(Image.open(io.BytesIO(jpeg)))))
            frame_records.append({"image_path": f"elsewhere/test/images/{key}/{i:05d}.png",
                                  "fxfycxcy": [float(rows[i, 0] * width), float(rows[i, 1] * height),
                                               float(rows[i, 2] * width), float(rows[i, 3] * height)],
                                  "w2c": w2c[i].tolist()})
        (root / "json/test/metadata").mkdir(parents=True, exist_ok=True)
        (root / f"json/test/metadata/{key}.json").write_text(json.dumps({"scene_name": key, "frames": frame_records}))
        truth[key] = {"c2w": c2w, "K": K, "jpegs": jpegs}
    (root / "chunks").mkdir()
    for c, entries in enumerate(chunk_entries):
        torch.save(entries, root / "chunks" / f"{c:06d}.torch")
    keys = sorted(truth)
    (root / "json/test/full_list.txt").write_text("\n".join(f"metadata/{k}.json" for k in keys) + "\n")
    return truth


@pytest.mark.parametrize("with_index", [False, True])
def test_re10k_chunks(tmp_path, with_index):
    truth = make_re10k(tmp_path)
    if with_index:
        index = {k: f"{int(k, 16) % 2:06d}.torch" for k in truth}
        (tmp_path / "chunks/index.json").write_text(json.dumps(index))
    reader = Re10kChunkReader(tmp_path / "chunks", cached_chunks=1)
    assert len(reader) == 3
    for i in range(len(reader)):
        key = reader.item_id(i)
        cams = reader.cameras(i)
        assert (cams.width, cams.height) == (64, 36)
        torch.testing.assert_close(cams.K, truth[key]["K"].float(), atol=1e-4, rtol=0)
        assert_scene_normalised(cams, truth[key]["c2w"])
        example = reader.load(i, [6, 2])
        assert example.domain == "scene" and example.images.shape == (2, 3, 36, 64)
        decoded = np.asarray(Image.open(io.BytesIO(truth[key]["jpegs"][2])), dtype=np.float32) / 255
        torch.testing.assert_close(example.images[1], torch.from_numpy(decoded).permute(2, 0, 1))


def test_re10k_json_layout_matches_the_chunks(tmp_path):
    make_re10k(tmp_path)
    chunks = Re10kChunkReader(tmp_path / "chunks")
    listed = Re10kJsonReader(tmp_path / "json/test/full_list.txt")
    assert len(listed) == 3
    by_key = {chunks.item_id(i): i for i in range(3)}
    for i in range(3):
        j = by_key[listed.item_id(i)]
        torch.testing.assert_close(listed.cameras(i).c2w, chunks.cameras(j).c2w)
        torch.testing.assert_close(listed.cameras(i).K, chunks.cameras(j).K, atol=1e-4, rtol=0)
        torch.testing.assert_close(listed.load(i, [0, 5]).images, chunks.load(j, [0, 5]).images)


def test_re10k_broken_chunk_is_an_input_error(tmp_path):
    (tmp_path / "000000.torch").write_bytes(b"not a zip file")
    with pytest.raises(InputError, match="000000.torch: not a pixelSplat chunk"):
        Re10kChunkReader(tmp_path)


# ----------------------------------------------------------------------------------------------- COLMAP

def quaternion(rotation: np.ndarray) -> np.ndarray:
    x, y, z, w = Rotation.from_matrix(rotation).as_quat()
    return np.array([w, x, y, z])


def write_colmap(folder: Path, cameras: list, images: list, points: list, binary: bool) -> None:
    """COLMAP's documented text and binary model formats.

    cameras: (id, model name, width, height, params); images: (id, w2c 4x4, camera id, name, xys [n, 2],
    point ids [n]); points: (id, xyz, rgb, track [(image id, point2D index)]).
    """
    model_ids = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "OPENCV": 4, "OPENCV_FISHEYE": 5}
    folder.mkdir(parents=True, exist_ok=True)
    if binary:
        data = struct.pack("<Q", len(cameras))
        for cid, model, w, h, params in cameras:
            data += struct.pack("<iiQQ", cid, model_ids[model], w, h) + struct.pack(f"<{len(params)}d", *params)
        (folder / "cameras.bin").write_bytes(data)
        data = struct.pack("<Q", len(images))
        for iid, w2c, cid, name, xys, ids in images:
            data += struct.pack("<i4d3di", iid, *quaternion(w2c[:3, :3]), *w2c[:3, 3], cid) + name.encode() + b"\0"
            data += struct.pack("<Q", len(xys)) + b"".join(struct.pack("<ddq", x, y, p) for (x, y), p in zip(xys, ids))
        (folder / "images.bin").write_bytes(data)
        data = struct.pack("<Q", len(points))
        for pid, xyz, rgb, track in points:
            data += struct.pack("<Q3d3BdQ", pid, *xyz, *rgb, 0.5, len(track))
            data += b"".join(struct.pack("<ii", *t) for t in track)
        (folder / "points3D.bin").write_bytes(data)
        return
    lines = ["# Camera list with one line of data per camera:"]
    lines += [f"{cid} {model} {w} {h} " + " ".join(str(float(p)) for p in params)
              for cid, model, w, h, params in cameras]
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:", f"# Number of images: {len(images)}"]
    for iid, w2c, cid, name, xys, ids in images:
        q, t = quaternion(w2c[:3, :3]), w2c[:3, 3]
        lines.append(f"{iid} " + " ".join(str(float(v)) for v in [*q, *t]) + f" {cid} {name}")
        lines.append(" ".join(f"{float(x)} {float(y)} {p}" for (x, y), p in zip(xys, ids)))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    lines = ["# 3D point list with one line of data per point:"]
    for pid, xyz, rgb, track in points:
        lines.append(f"{pid} " + " ".join(str(float(v)) for v in xyz) + " " + " ".join(map(str, rgb)) + " 0.5 "
                     + " ".join(f"{a} {b}" for a, b in track))
    (folder / "points3D.txt").write_text("\n".join(lines) + "\n")


def random_model(seed: int) -> tuple[list, list, list]:
    rng = np.random.default_rng(seed)
    cameras = [(1, "PINHOLE", 64, 48, (50.0, 52.0, 32.0, 24.0)), (2, "SIMPLE_RADIAL", 64, 48, (55.0, 31.5, 24.5, 0.01))]
    images, points = [], []
    for k in range(4):
        w2c = np.eye(4)
        w2c[:3, :3] = Rotation.random(random_state=seed + k).as_matrix()
        w2c[:3, 3] = rng.normal(size=3)
        ids = rng.integers(-1, 5, size=6)
        images.append((10 + k, w2c, 1 + k % 2, f"frame_{3 - k:03d}.png", rng.uniform(0, 48, (6, 2)), ids))
    for pid in range(5):
        points.append((pid, tuple(rng.normal(size=3)), (pid * 10, 20, 30), [(10, 0), (12, 3)]))
    return cameras, images, points


def test_colmap_text_and_binary_models_read_the_same(tmp_path):
    cameras, images, points = random_model(0)
    write_colmap(tmp_path / "bin", cameras, images, points, binary=True)
    write_colmap(tmp_path / "txt", cameras, images, points, binary=False)
    a, b = read_model(tmp_path / "bin"), read_model(tmp_path / "txt")
    assert a.cameras == b.cameras
    assert a.cameras[2].model == "SIMPLE_RADIAL" and a.cameras[2].params == (55.0, 31.5, 24.5, 0.01)
    for iid, w2c, cid, name, xys, ids in images:
        for model in (a, b):
            image = model.images[iid]
            assert image.name == name and image.camera_id == cid
            np.testing.assert_allclose(image.w2c(), w2c, atol=1e-12)
            np.testing.assert_allclose(image.xys, xys)
            np.testing.assert_array_equal(image.point3d_ids, ids)
    np.testing.assert_array_equal(a.point_ids, b.point_ids)
    np.testing.assert_allclose(a.points, b.points)
    np.testing.assert_array_equal(a.colors, b.colors)
    K = a.cameras[2].intrinsics(tmp_path)
    np.testing.assert_allclose(K, [[55.0, 0, 31.5], [0, 55.0, 24.5], [0, 0, 1]])


def test_colmap_truncated_binary_and_fisheye_are_input_errors(tmp_path):
    cameras, images, points = random_model(1)
    write_colmap(tmp_path, cameras, images, points, binary=True)
    (tmp_path / "images.bin").write_bytes((tmp_path / "images.bin").read_bytes()[:50])
    with pytest.raises(InputError, match="malformed COLMAP binary model"):
        read_model(tmp_path)
    write_colmap(tmp_path / "fish", [(1, "OPENCV_FISHEYE", 64, 48, (50.0, 50, 32, 24, 0, 0, 0, 0))], [], [],
                 binary=False)
    with pytest.raises(InputError, match="OPENCV_FISHEYE model"):
        read_model(tmp_path / "fish").cameras[1].intrinsics(tmp_path / "fish")


# ----------------------------------------------------------------------------------------------- DL3DV (COLMAP)

def test_colmap_scenes_with_downsampled_frames(tmp_path):
    c2w, K = walk_cameras(8, 64, 48, 5)
    w2c = torch.linalg.inv(c2w).numpy()
    order = [3, 0, 7, 5, 1, 6, 2, 4]  # registration order differs from the frames' name order
    images = [(10 + k, w2c[i], 1, f"frame_{i:05d}.png", np.zeros((0, 2)), np.zeros(0, np.int64))
              for k, i in enumerate(order)]
    fx, fy, cx, cy = K[0, 0, 0].item(), K[0, 1, 1].item(), K[0, 0, 2].item(), K[0, 1, 2].item()
    scene = tmp_path / "scene_a"
    write_colmap(scene / "colmap/sparse/0", [(1, "PINHOLE", 64, 48, (fx, fy, cx, cy))], images, [], binary=True)
    (scene / "images_4").mkdir()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (12, 16, 3), dtype=np.uint8) for _ in range(8)]
    for i, frame in enumerate(frames):
        (scene / "images_4" / f"frame_{i:05d}.png").write_bytes(png_bytes(frame))
    (tmp_path / "not_a_scene").mkdir()
    reader = ColmapSceneReader(tmp_path)
    assert len(reader) == 1 and reader.item_id(0) == "scene_a"
    cams = reader.cameras(0)
    assert (cams.width, cams.height) == (16, 12)
    torch.testing.assert_close(cams.K[0], torch.tensor([[fx / 4, 0, cx / 4], [0, fy / 4, cy / 4], [0, 0, 1]]))
    assert_scene_normalised(cams, c2w)
    example = reader.load(0, [4, 1])
    torch.testing.assert_close(example.images[0], torch.from_numpy(frames[4]).permute(2, 0, 1).float() / 255)


# ----------------------------------------------------------------------------------------------- MVImgNet

def make_mvimgnet(root: Path, seed: int = 0, width: int = 80, height: int = 60, views: int = 12) -> dict:
    """A sphere (radius 0.3) filmed around by upright cameras in an arbitrary COLMAP world, with exact masks,
    surface points and background points."""
    rng = np.random.default_rng(seed)
    rotation = Rotation.random(random_state=seed).as_matrix()
    up = rotation @ np.array([0.0, 0.0, 1.0])  # the world's up direction in COLMAP coordinates
    center = rng.normal(size=3) * 2
    radius, distance = 0.3, 1.5
    azimuth = np.linspace(0, 2 * np.pi, views, endpoint=False)
    elevation = np.radians(rng.uniform(10, 30, views))
    local = np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], 1)
    eyes = torch.from_numpy(center + distance * local @ rotation.T)
    c2w = look_at(eyes, torch.from_numpy(center).expand_as(eyes), up=tuple(up))
    K = torch.tensor([[70.0, 0, width / 2], [0, 70.0, height / 2], [0, 0, 1]], dtype=torch.float64)
    cams = Cameras(c2w, K.expand(views, 3, 3), width, height)
    origins, directions = pixel_rays(cams)
    # A pixel is object where its ray hits the sphere.
    offset = origins - torch.from_numpy(center)
    b = (offset * directions).sum(-1)
    masks = (b**2 - (offset**2).sum(-1) + radius**2 > 0).numpy()
    surface = rng.normal(size=(400, 3))
    surface = center + radius * surface / np.linalg.norm(surface, axis=1, keepdims=True)
    background = center + 3.0 * rng.normal(size=(60, 3)) / np.sqrt(3)
    points = np.concatenate([surface, background])
    w2c = torch.linalg.inv(c2w).numpy()
    images = []
    folder = root / "chair" / "obj1"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for v in range(views):
        camera_points = points @ w2c[v, :3, :3].T + w2c[v, :3, 3]
        uv = camera_points[:, :2] / camera_points[:, 2:] * 70.0 + [width / 2, height / 2]
        facing = np.einsum("ij,ij->i", points[:400] - center, eyes[v].numpy() - points[:400]) > 0
        visible = np.concatenate([facing, np.ones(60, bool)]) & (camera_points[:, 2] > 0.1) \
            & (uv[:, 0] >= 0) & (uv[:, 0] < width) & (uv[:, 1] >= 0) & (uv[:, 1] < height)
        ids = np.flatnonzero(visible)
        images.append((v + 1, w2c[v], 1, f"{v:03d}.jpg", uv[ids], ids))
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[masks[v]] = (200, 30, 30)
        (folder / "images" / f"{v:03d}.jpg").write_bytes(png_bytes(pixels, "JPEG"))
        (folder / "masks" / f"{v:03d}.png").write_bytes(png_bytes((masks[v] * 255).astype(np.uint8)))
    write_colmap(folder / "sparse/0", [(1, "SIMPLE_PINHOLE", width, height, (70.0, width / 2, height / 2))], images,
                 [(i, tuple(p), (0, 0, 0), []) for i, p in enumerate(points)], binary=False)
    return {"distance": distance, "radius": radius, "folder": folder}


def test_mvimgnet_object_is_upright_centred_scaled_and_cropped(tmp_path):
    fixture = make_mvimgnet(tmp_path)
    reader = MVImgNetReader(tmp_path, image_size=64, crop_margin=0.1)
    assert len(reader) == 1 and reader.item_id(0) == "chair/obj1"
    cams = reader.cameras(0)
    # Every camera looked at the sphere's centre: after normalisation its optical axis passes near the origin (the
    # point box is a little lopsided: the underside is seen by few cameras).
    to_origin = -cams.centers
    along = (to_origin * cams.forward).sum(-1, keepdim=True)
    assert (to_origin - along * cams.forward).norm(dim=-1).max() < 0.1
    # Upright: the mean camera up axis (-y) is the world's +z.
    up = torch.nn.functional.normalize(-cams.c2w[:, :3, 1].mean(0), dim=0)
    assert float(up[2]) > 0.999
    # The sphere's 2-98 % point box has a half-extent of about 0.96 radius, scaled to 1.
    ratio = cams.centers.norm(dim=-1) / (fixture["distance"] / fixture["radius"])
    assert float(ratio.min()) > 0.95 and float(ratio.max()) < 1.12
    # The sphere centre in the normalised world: the point nearest to all optical axes.
    projector = torch.eye(3) - cams.forward[:, :, None] * cams.forward[:, None, :]
    sphere_center = torch.linalg.solve(projector.sum(0), (projector @ cams.centers[..., None]).sum(0))[:, 0]
    example = reader.load(0)
    assert example.images.shape == (12, 3, 64, 64)
    # Each crop is a square of side 1.2 x the silhouette's diameter, centred on it: a centred disk of radius 64/2.4.
    yy, xx = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    for v in range(12):
        mask = example.masks[v, 0]
        area = float(mask.sum())
        assert area == pytest.approx(math.pi * (64 / 2.4) ** 2, rel=0.06)
        assert float((mask * xx).sum() / area) == pytest.approx(32, abs=1.0)
        assert float((mask * yy).sum() / area) == pytest.approx(32, abs=1.0)
        # With the reader's cameras, the sphere centre projects to the crop's centre.
        projected = cams.K[v] @ (cams.w2c()[v, :3, :3] @ sphere_center + cams.w2c()[v, :3, 3])
        assert (projected[:2] / projected[2]).tolist() == pytest.approx([32, 32], abs=0.5)
    # Background is white, the object keeps its colour.
    assert float(example.images[:, :, 0, 0].min()) > 0.99
    centre = example.images[:, :, 30:34, 30:34].mean((0, 2, 3))
    assert centre.tolist() == pytest.approx([200 / 255, 30 / 255, 30 / 255], abs=0.06)


def test_mvimgnet_empty_mask_is_an_input_error(tmp_path):
    fixture = make_mvimgnet(tmp_path)
    (fixture["folder"] / "masks" / "003.png").write_bytes(png_bytes(np.zeros((60, 80), np.uint8)))
    with pytest.raises(InputError, match="003.jpg: empty mask|only .* sparse points"):
        MVImgNetReader(tmp_path).cameras(0)


# ----------------------------------------------------------------------------------------------- conversion

def test_convert_mvimgnet_to_the_native_format(tmp_path):
    make_mvimgnet(tmp_path / "mvimgnet")
    report = run_convert(ConvertConfig(out=tmp_path / "out", res=32, progress=False, val_fraction=0, test_fraction=0,
                                       source=SourceConfig(kind="mvimgnet", path=tmp_path / "mvimgnet",
                                                           image_size=64)))
    assert (report.done, report.failed, report.views) == (1, 0, 12)
    source = MVImgNetReader(tmp_path / "mvimgnet", image_size=64)
    converted = NativeReader(tmp_path / "out")
    assert converted.item_id(0) == "chair_obj1"
    expected = resize_example(source.load(0), 32)
    example = converted.load(0)
    torch.testing.assert_close(example.cameras.c2w, expected.cameras.c2w)
    torch.testing.assert_close(example.cameras.K, expected.cameras.K)
    # uint8 storage of straight colour and alpha: the white composite comes back within a few levels.
    assert (example.images - expected.images).abs().max() < 3 / 255
    assert (example.masks - expected.masks).abs().max() < 1 / 255


def test_convert_re10k_chunks_crops_scenes_square(tmp_path):
    make_re10k(tmp_path)
    assert entrypoint(["data", "convert", "--kind", "re10k-chunks", "--path", str(tmp_path / "chunks"), "--out",
                       str(tmp_path / "out"), "--res", "24", "--no-progress", "--val-fraction", "0",
                       "--test-fraction", "0"]) == 0
    converted = NativeReader(tmp_path / "out", domain="scene")
    chunks = Re10kChunkReader(tmp_path / "chunks")
    assert len(converted) == 3
    index = [chunks.item_id(i) for i in range(3)].index(converted.item_id(0))
    expected = resize_example(center_crop_square(chunks.load(index)), 24)
    example = converted.load(0)
    torch.testing.assert_close(example.cameras.K, expected.cameras.K)
    torch.testing.assert_close(example.cameras.c2w, expected.cameras.c2w)
    assert (example.images - expected.images).abs().max() <= 0.5 / 255 + 1e-6
