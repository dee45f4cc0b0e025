"""The GL renderer, mesh loading, and the `data synth` / `data render` jobs (headless EGL; skipped without it)."""

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusiongs.cli.main import entrypoint
from diffusiongs.data.capture import ObjectCameraConfig, OutputConfig
from diffusiongs.data.dataset import MultiViewDataset, SampleConfig
from diffusiongs.data.gl import Material, MeshPart, RenderMesh
from diffusiongs.data.meshes import load_mesh
from diffusiongs.data.objaverse import fetch_objaverse, parse_uids
from diffusiongs.data.render_meshes import MeshRenderConfig, item_ids, run_render
from diffusiongs.data.store import NativeReader, read_manifest
from diffusiongs.data.synth import SynthConfig, run_synth
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras, look_at, orbit_cameras
from diffusiongs.geometry.rays import pixel_rays

trimesh = pytest.importorskip("trimesh")
moderngl = pytest.importorskip("moderngl")
ASSIMP_MODELS = Path("/usr/share/assimp/models")


@pytest.fixture(scope="module")
def renderer():
    from diffusiongs.data.gl import MeshRenderer

    try:
        instance = MeshRenderer()
    except Exception as err:  # no EGL display / driver on this machine
        pytest.skip(f"no headless OpenGL (EGL): {err}")
    yield instance
    instance.release()


def sphere_part(center, radius: float, color=(1.0, 0.0, 0.0)) -> MeshPart:
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    n = len(sphere.vertices)
    return MeshPart((sphere.vertices + center).astype(np.float32), sphere.vertex_normals.astype(np.float32),
                    sphere.faces.astype(np.uint32), np.ones((n, 4), np.float32), Material(color=color))


def test_render_matches_the_camera_convention_with_exact_alpha_and_depth(renderer):
    center = np.array([0.4, -0.3, 0.25])
    radius = 0.3
    base = orbit_cameras(6, 3.0, 25.0, 50.0, 64, dtype=torch.float64)
    K = base.K.clone()
    K[:, 0, 2] += 5.0  # off-centre principal point and non-square image
    cams = Cameras(base.c2w, K, 80, 64)
    out = renderer.render(RenderMesh((sphere_part(center, radius),)), cams)
    assert out.rgba.shape == (6, 64, 80, 4) and out.depth.shape == (6, 64, 80)
    origins, directions = (t.numpy() for t in pixel_rays(cams))
    offset = origins - center
    along = (offset * directions).sum(-1)
    miss = np.sqrt(np.maximum((offset**2).sum(-1) - along**2, 0))  # distance from the sphere centre to the ray
    pixel = 2 * 3.0 * np.tan(np.radians(25)) / 64  # a pixel's footprint near the sphere, in world units
    # Exact alpha: 0 more than a pixel outside the silhouette, 255 more than a pixel inside; partial in between.
    alpha = out.rgba[..., 3]
    assert np.all(alpha[miss > radius + pixel] == 0)
    assert np.all(alpha[miss < radius - pixel] == 255)
    # Depth is camera z of the first hit.
    inside = miss < radius - pixel
    hit_distance = -along - np.sqrt(np.maximum(radius**2 - miss**2, 0))
    z = hit_distance * (directions * cams.forward.numpy()[:, None, None, :]).sum(-1)
    np.testing.assert_allclose(out.depth[inside], z[inside], atol=5e-3)
    assert np.all(out.depth[alpha == 0] == 0)
    # Straight-alpha colour of a red sphere stays red at partially covered pixels.
    partial = (alpha > 0) & (alpha < 255)
    assert partial.any() and np.all(out.rgba[partial][:, 1:3] < 30)


def test_mesh_loading_uses_textures_with_v_up_and_vertex_colours(renderer, tmp_path):
    # A quad in the glTF y-up frame facing +z: its texture's top half red, bottom half blue.
    texture = np.zeros((8, 8, 3), np.uint8)
    texture[:4] = (255, 0, 0)
    texture[4:] = (0, 0, 255)
    vertices = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], float)
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)  # v up: the top edge samples the image's top row
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=Image.fromarray(texture),
                                                   baseColorFactor=[255, 255, 255, 255])
    quad = trimesh.Trimesh(vertices, [[0, 1, 2], [0, 2, 3]], visual=trimesh.visual.TextureVisuals(uv=uv,
                                                                                                  material=material))
    quad.export(tmp_path / "quad.glb")
    mesh = load_mesh(tmp_path / "quad.glb", up_axis="y")
    np.testing.assert_allclose(mesh.bounds(), [[-1, 0, -1], [1, 0, 1]], atol=1e-6)  # y-up -> z-up
    # Seen from -y (the quad's front after the rotation), looking at the origin.
    cams = Cameras(look_at(torch.tensor([[0.0, -3.0, 0.0]])), orbit_cameras(1, 3, 0, 50, 64).K, 64, 64)
    rgb = renderer.render(mesh, cams).rgba[0, ..., :3].astype(int)
    assert rgb[20, 32, 0] > 3 * rgb[20, 32, 2]  # upper half red
    assert rgb[44, 32, 2] > 3 * rgb[44, 32, 0]  # lower half blue

    box = trimesh.creation.box(extents=(1.0, 2.0, 0.5))
    box.visual.vertex_colors = np.tile([0, 200, 0, 255], (len(box.vertices), 1))
    box.export(tmp_path / "green.ply")
    mesh = load_mesh(tmp_path / "green.ply", up_axis="z")
    np.testing.assert_allclose(mesh.bounds(), [[-0.5, -1, -0.25], [0.5, 1, 0.25]], atol=1e-6)
    out = renderer.render(mesh, orbit_cameras(2, 3.0, 30.0, 50.0, 48))
    covered = out.rgba[..., 3] == 255
    colors = out.rgba[covered][:, :3].astype(int)
    assert np.all(colors[:, 1] > colors[:, 0] + 20) and np.all(colors[:, 1] > colors[:, 2] + 20)


def test_broken_and_empty_meshes_are_input_errors(tmp_path):
    (tmp_path / "broken.glb").write_bytes(b"glTF garbage")
    with pytest.raises(InputError, match="broken.glb: cannot load mesh"):
        load_mesh(tmp_path / "broken.glb")
    (tmp_path / "points.ply").write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                                         "property float z\nend_header\n0 0 0\n1 1 1\n")
    with pytest.raises(InputError, match="points.ply: no triangles"):
        load_mesh(tmp_path / "points.ply")


def small_output(**changes) -> OutputConfig:
    return OutputConfig(**{"res": 32, "workers": 1, "progress": False, "val_fraction": 0.0, "test_fraction": 0.0,
                           **changes})


def make_meshes(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, shape in enumerate([trimesh.creation.box(extents=(1, 2, 3)), trimesh.creation.icosphere(2)]):
        shape.visual.vertex_colors = np.tile([50 * k, 100, 200, 255], (len(shape.vertices), 1))
        path = folder / f"shape{k}.{['obj', 'glb'][k]}"
        shape.export(path)
        paths.append(path)
    (folder / "broken.glb").write_bytes(b"not a mesh")
    return paths + [folder / "broken.glb"]


def test_render_job_is_resumable_logs_failures_and_shards(renderer, tmp_path):
    paths = make_meshes(tmp_path / "meshes")
    camera = ObjectCameraConfig(views=4, ring_views=4, orbit_views=2)
    config = MeshRenderConfig(out=tmp_path / "out", meshes=tuple(paths), camera=camera, output=small_output())
    report = run_render(config)
    assert (report.done, report.failed, report.views) == (2, 1, 12)
    failures = [json.loads(line) for line in (tmp_path / "out/failures.jsonl").read_text().splitlines()]
    assert failures[0]["item"] == "broken" and "cannot load mesh" in failures[0]["error"]
    assert sorted(read_manifest(tmp_path / "out").items) == ["shape0", "shape1"]
    again = run_render(config)
    assert (again.done, again.skipped, again.failed) == (0, 2, 1)
    sharded = [run_render(MeshRenderConfig(out=tmp_path / f"shard{i}", meshes=tuple(paths), shard=f"{i}/2",
                                           camera=camera, output=small_output())) for i in range(2)]
    assert sum(r.done + r.failed for r in sharded) == 3
    ids = set(read_manifest(tmp_path / "shard0").items) | set(read_manifest(tmp_path / "shard1").items)
    assert ids == {"shape0", "shape1"}
    assert set(read_manifest(tmp_path / "shard0").items).isdisjoint(read_manifest(tmp_path / "shard1").items)
    # The same object renders identically in every shard and run (viewpoints depend on seed and item id only).
    shard = "shard0" if "shape0" in read_manifest(tmp_path / "shard0").items else "shard1"
    assert (tmp_path / shard / "objects/shape0/images/00001.png").read_bytes() == \
        (tmp_path / "out/objects/shape0/images/00001.png").read_bytes()


def test_rendered_objects_are_normalised_on_white_with_exact_alpha(renderer, tmp_path):
    paths = make_meshes(tmp_path / "meshes")[:2]
    run_render(MeshRenderConfig(out=tmp_path / "out", meshes=tuple(paths),
                                camera=ObjectCameraConfig(views=6, view_sampling="random", orbit_views=0),
                                output=small_output(depth=True)))
    reader = NativeReader(tmp_path / "out")
    example = reader.load(0)
    assert example.images.shape == (6, 3, 32, 32)
    background = example.masks[:, 0] == 0
    assert torch.all(example.images.permute(1, 0, 2, 3)[:, background] == 1.0)
    assert float(example.masks.amax()) == 1.0
    assert torch.all(example.depths[:, 0][background] == 0)
    meta = json.loads((tmp_path / "out/objects" / reader.item_id(0) / "cameras.json").read_text())["meta"]
    assert meta["source"].endswith((".obj", ".glb"))
    assert torch.allclose(example.cameras.centers.norm(dim=-1), torch.tensor(3.0))


def test_item_ids_are_unique_and_independent_of_order():
    paths = [Path("a/chair.glb"), Path("b/chair.glb"), Path("c/table v2.obj")]
    ids = item_ids(paths)
    assert ids[Path("c/table v2.obj")] == "table_v2"
    assert len(set(ids.values())) == 3 and ids[Path("a/chair.glb")].startswith("chair-")
    assert item_ids(paths[::-1]) == ids


def test_objaverse_errors_are_clear(monkeypatch, tmp_path):
    uid = "8476c4170df24cf5bbe6967222d1a42d"
    (tmp_path / "uids.txt").write_text(f"# chairs\n{uid}\n\n")
    assert parse_uids([str(tmp_path / "uids.txt"), f"{uid},{uid}"]) == [uid]
    with pytest.raises(InputError, match="not an Objaverse uid"):
        parse_uids(["chair"])
    monkeypatch.setitem(sys.modules, "objaverse", None)  # import fails as if not installed
    with pytest.raises(InputError, match="'objaverse' package is not installed"):
        fetch_objaverse([uid])

    class OfflineObjaverse:
        @staticmethod
        def load_objects(uids, download_processes):
            raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setitem(sys.modules, "objaverse", OfflineObjaverse)
    with pytest.raises(InputError, match="downloading 1 objects failed .*ConnectionError.*network"):
        fetch_objaverse([uid])
    assert entrypoint(["data", "render", "--out", str(tmp_path / "out"), "--objaverse", uid, "--no-progress"]) == 2


def synth_config(out: Path, workers: int = 1) -> SynthConfig:
    return SynthConfig(out=out, objects=3, scenes=1, seed=7,
                       camera=ObjectCameraConfig(views=5, view_sampling="random", orbit_views=2),
                       output=small_output(workers=workers))


def read_images(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("*/*/images/*.png"))}


def test_synth_is_deterministic_resumable_and_trains(renderer, tmp_path):
    report = run_synth(synth_config(tmp_path / "a"))
    assert (report.done, report.failed, report.views) == (4, 0, 3 * 7 + 5)
    run_synth(synth_config(tmp_path / "b"))
    images = read_images(tmp_path / "a")
    assert len(images) == 26 and images == read_images(tmp_path / "b")
    (tmp_path / "a/objects/obj_000001/cameras.json").unlink()
    again = run_synth(synth_config(tmp_path / "a"))
    assert (again.done, again.skipped) == (1, 3)
    assert read_images(tmp_path / "a") == images
    # Objects are distinct, in [-1, 1]^3 views on white; scenes have no background.
    objects = NativeReader(tmp_path / "a", groups=("train", "eval"))
    assert len({objects.load(i).images.sum().item() for i in range(3)}) == 3
    scene = NativeReader(tmp_path / "a", domain="scene").load(0)
    assert torch.all(scene.masks == 1) and scene.images.shape == (5, 3, 32, 32)
    dataset = MultiViewDataset(NativeReader(tmp_path / "a"), SampleConfig(resolution=16, num_noisy=2, num_novel=2))
    batch = dataset.collate([dataset[i] for i in range(3)])
    assert batch.images.shape == (3, 5, 3, 16, 16) and batch.masks.shape == (3, 5, 1, 16, 16)


def test_synth_with_worker_processes_matches_in_process(renderer, tmp_path):
    run_synth(synth_config(tmp_path / "serial"))
    report = run_synth(synth_config(tmp_path / "parallel", workers=2))
    assert report.done == 4
    assert read_images(tmp_path / "serial") == read_images(tmp_path / "parallel")


def test_cli_synth_and_preview(renderer, tmp_path, capsys):
    out = tmp_path / "ds"
    assert entrypoint(["data", "synth", "--out", str(out), "--objects", "2", "--views", "4", "--ring-views", "4",
                       "--orbit-views", "0", "--res", "24", "--workers", "1", "--no-progress", "--val-fraction", "0",
                       "--test-fraction", "0"]) == 0
    assert "2 made, 0 already done, 0 failed" in capsys.readouterr().out
    assert entrypoint(["data", "preview", str(out), "--out", str(tmp_path / "sheet.png"), "--tile", "20"]) == 0
    sheet = np.asarray(Image.open(tmp_path / "sheet.png"))
    assert sheet.shape == (2 * 22 - 2, 8 * 22 - 2, 3)
    assert entrypoint(["data", "manifest", str(out), "--val-fraction", "1.0"]) == 0
    assert "train: 0, val: 2" in capsys.readouterr().out


@pytest.mark.skipif(not ASSIMP_MODELS.is_dir(), reason="apt-get install assimp-testmodels for real test meshes")
def test_real_meshes_render_with_their_textures(renderer, tmp_path):
    paths = [ASSIMP_MODELS / "Collada/duck.dae", ASSIMP_MODELS / "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb",
             ASSIMP_MODELS / "OBJ/spider.obj"]
    report = run_render(MeshRenderConfig(out=tmp_path, meshes=tuple(paths),
                                         camera=ObjectCameraConfig(views=4, ring_views=4, orbit_views=0),
                                         output=small_output()))
    assert (report.done, report.failed) == (3, 0)
    reader = NativeReader(tmp_path)
    duck = reader.load([reader.item_id(i) for i in range(3)].index("duck"))
    covered = duck.masks[:, 0] == 1
    mean = duck.images.permute(1, 0, 2, 3)[:, covered].mean(1)
    assert mean[0] > mean[2] + 0.2 and mean[1] > mean[2] + 0.1  # the duck's texture is yellow


def test_png_written_with_alpha_round_trips(tmp_path):
    from diffusiongs.data.store import encode_png

    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(pixels)))), pixels)
    depth = np.random.default_rng(1).integers(0, 65536, (5, 7)).astype(np.uint16)
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encode_png(depth)))), depth)
