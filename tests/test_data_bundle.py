"""Mesh bundles: the compact archive, simplification, Sweet Home 3D catalogues, and rendering a bundle."""

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusiongs.cli.main import entrypoint
from diffusiongs.data.bundle import BundleConfig, read_bundle, run_bundle, simplify, split_for
from diffusiongs.data.gl import Material, MeshPart, RenderMesh
from diffusiongs.data.mesh_archive import read_mesh, write_mesh
from diffusiongs.data.store import NativeReader, read_manifest
from diffusiongs.errors import InputError
from diffusiongs.system import DiffusionGS, preset
from diffusiongs.system import io as model_io

trimesh = pytest.importorskip("trimesh")


def textured_box_part(subdivisions: int = 0) -> MeshPart:
    box = trimesh.creation.box(extents=(2.0, 1.0, 0.5))
    for _ in range(subdivisions):
        box = box.subdivide()
    rng = np.random.default_rng(0)
    n = len(box.vertices)
    texture = rng.integers(0, 255, (40, 24, 4), dtype=np.uint8)
    texture[..., 3] = 255
    return MeshPart(box.vertices.astype(np.float32), box.vertex_normals.astype(np.float32),
                    box.faces.astype(np.uint32), np.ones((n, 4), np.float32), Material(color=(0.5, 0.25, 1.0)),
                    uvs=rng.uniform(-2, 3, (n, 2)).astype(np.float32), texture=texture)


def test_archive_round_trip_is_within_its_quantisation(tmp_path):
    part = textured_box_part()
    colored = MeshPart(part.positions * 0.5, part.normals, part.faces,
                       np.random.default_rng(1).uniform(0, 1, (len(part.positions), 4)).astype(np.float32))
    mesh = RenderMesh((part, colored))
    size = write_mesh(tmp_path / "m.mesh.npz", mesh, max_texture_size=16)
    assert size == (tmp_path / "m.mesh.npz").stat().st_size
    back = read_mesh(tmp_path / "m.mesh.npz")
    for a, b in zip(mesh.parts, back.parts):
        # Positions: uint16 over [-1, 1], half a step of 2/65535; texture coordinates: half a step of their range.
        assert np.abs(a.positions - b.positions).max() <= 1 / 65535 + 1e-6
        assert np.abs(a.colors - b.colors).max() <= 0.5 / 255 + 1e-6
        assert np.all(np.degrees(np.arccos(np.clip((a.normals * b.normals).sum(1), -1, 1))) < 1.0)
        assert np.array_equal(a.faces, b.faces) and b.material == a.material
    span = part.uvs.max(0) - part.uvs.min(0)
    assert (np.abs(back.parts[0].uvs - part.uvs) <= span / 65535 / 2 + 1e-6).all()
    assert max(back.parts[0].texture.shape[:2]) == 16 and back.parts[1].texture is None


def test_a_non_archive_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "bad.mesh.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.mesh.npz: not a readable"):
        read_mesh(path)
    # an archive missing one part's array: still one line naming the file
    write_mesh(path, RenderMesh((textured_box_part(),)), max_texture_size=16)
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files if k != "p0_faces"}
    np.savez_compressed(path, **arrays)
    with pytest.raises(InputError, match="bad.mesh.npz: damaged .* archive .*p0_faces"):
        read_mesh(path)


def test_simplify_caps_the_faces_and_keeps_vertex_attributes():
    part = textured_box_part(subdivisions=4)  # 3,072 triangles
    mesh = RenderMesh((part,)).normalized()
    small = simplify(mesh, 500)
    assert small.num_faces <= 500 < mesh.num_faces
    out = small.parts[0]
    # Clustering keeps original vertices: every kept vertex exists in the input with its own uv and colour.
    original = {tuple(np.round(p, 6)): tuple(uv) for p, uv in zip(mesh.parts[0].positions, mesh.parts[0].uvs)}
    assert all(tuple(np.round(p, 6)) in original for p in out.positions)
    assert all(original[tuple(np.round(p, 6))] == tuple(uv) for p, uv in zip(out.positions, out.uvs))
    lo, hi = small.bounds()
    assert np.allclose(lo, mesh.bounds()[0], atol=0.05) and np.allclose(hi, mesh.bounds()[1], atol=0.05)
    assert simplify(mesh, 10_000) is mesh  # already small enough: untouched


def make_catalogue(path: Path, models: dict[str, tuple[str, str | None]]) -> Path:
    """A Sweet Home 3D catalogue (.sh3f): properties + one OBJ per model (name -> (category, modelRotation))."""
    box = trimesh.creation.box(extents=(1.0, 2.0, 0.5))
    lines = ["license=Public domain test", "description=test furniture"]
    with zipfile.ZipFile(path, "w") as archive:
        for k, (name, (category, rotation)) in enumerate(models.items(), start=1):
            archive.writestr(f"test/{name}/{name}.obj", box.export(file_type="obj"))
            lines += [f"id#{k}=Test#{name}", f"name#{k}={name.title()}", f"category#{k}={category}",
                      f"model#{k}=/test/{name}/{name}.obj", f"creator#{k}=Tester \\u00e9"]
            if rotation:
                lines.append(f"modelRotation#{k}={rotation}")
        archive.writestr("PluginFurnitureCatalog.properties", "\n".join(lines))
    return path


def test_bundle_from_a_catalogue_records_provenance_licence_and_stable_splits(tmp_path):
    names = {f"item{k}": ("Kitchen", None) for k in range(12)}
    names["turned"] = ("Kitchen", "1 0 0 0 0 1 0 -1 0")  # turns the box's 2-unit (y-up) height to lie along y
    catalogue = make_catalogue(tmp_path / "Test Furniture.sh3f", names)
    cfg = BundleConfig(sources=(catalogue,), out=tmp_path / "bundle", heldout_fraction=0.3, progress=False)
    index = run_bundle(cfg)
    assert index == read_bundle(tmp_path / "bundle")
    assert index["sources"]["Test_Furniture"]["license"] == "Public domain test"
    meshes = {m["id"]: m for m in index["meshes"]}
    assert len(meshes) == 13 and meshes["Test_Furniture__turned"]["creator"] == "Tester é"
    assert all(m["split"] == split_for(m["id"], 0.3) for m in meshes.values())
    assert {m["split"] for m in meshes.values()} == {"train", "test"}
    def extent(mesh_id):
        mesh = read_mesh(tmp_path / "bundle" / meshes[mesh_id]["file"])
        return np.ptp(np.concatenate([p.positions for p in mesh.parts]), axis=0)

    # y-up files stand up in the z-up world; the catalogue's modelRotation is applied first.
    assert extent("Test_Furniture__item0") == pytest.approx([1.0, 0.5, 2.0], abs=1e-3)
    assert extent("Test_Furniture__turned") == pytest.approx([1.0, 2.0, 0.5], abs=1e-3)
    assert run_bundle(cfg)["meshes"] == index["meshes"]  # a rerun keeps what exists


def test_bundle_skips_and_logs_a_broken_mesh(tmp_path):
    folder = tmp_path / "meshes"
    folder.mkdir()
    trimesh.creation.icosphere(1).export(folder / "good.glb")
    (folder / "broken.glb").write_bytes(b"glTF garbage")
    cfg = BundleConfig(sources=(folder,), out=tmp_path / "b", folder_license="CC0", progress=False)
    for _ in range(2):  # a rerun tries the broken mesh again and lists it once, not once per run
        index = run_bundle(cfg)
        assert [m["id"] for m in index["meshes"]] == ["meshes__good"]
        failures = [json.loads(line) for line in (tmp_path / "b" / "failures.jsonl").read_text().splitlines()]
        assert [f["item"] for f in failures] == ["meshes__broken"]
    other = folder.parent / "more"
    other.mkdir()
    trimesh.creation.box().export(other / "box.glb")
    index = run_bundle(replace(cfg, sources=(other,), folder_license="CC-BY"))  # completing with another source
    assert {m["id"] for m in index["meshes"]} == {"meshes__good", "more__box"}
    assert {name: source["license"] for name, source in index["sources"].items()} == {"meshes": "CC0",
                                                                                       "more": "CC-BY"}
    with pytest.raises(InputError, match="the bundle was made with"):
        run_bundle(replace(cfg, max_faces=500))
    assert entrypoint(["data", "bundle", str(tmp_path / "missing.sh3f"), "--out", str(tmp_path / "c")]) == 2


def test_rendering_a_bundle_keeps_its_splits_and_licences(tmp_path):
    pytest.importorskip("moderngl")
    from diffusiongs.data.gl import MeshRenderer

    try:  # only the OpenGL context may skip the test; a failure of the render path itself must fail it
        MeshRenderer().release()
    except Exception as err:  # no EGL display / driver on this machine
        pytest.skip(f"no headless OpenGL (EGL): {err}")
    catalogue = make_catalogue(tmp_path / "cat.sh3f", {f"item{k}": ("Bedroom", None) for k in range(6)})
    index = run_bundle(BundleConfig(sources=(catalogue,), out=tmp_path / "bundle", heldout_fraction=0.5,
                                    progress=False))
    code = entrypoint(["data", "render", "--bundle", str(tmp_path / "bundle"), "--out", str(tmp_path / "ds"),
                       "--res", "16", "--views", "8", "--orbit-views", "4", "--surface-points", "0",
                       "--workers", "1", "--no-progress"])
    assert code == 0
    manifest = read_manifest(tmp_path / "ds")
    expected = {m["id"]: m["split"] for m in index["meshes"]}
    assert {i: s for s, ids in manifest.splits.items() for i in ids} == expected
    reader = NativeReader(tmp_path / "ds", "test", "object")
    meta = json.loads((tmp_path / "ds" / "objects" / reader.item_id(0) / "cameras.json").read_text())["meta"]
    assert meta["license"] == "Public domain test" and meta["category"] == "Bedroom"
    image = np.asarray(Image.open(tmp_path / "ds" / "objects" / reader.item_id(0) / "images" / "00000.png"))
    assert image[..., 3].max() == 255  # the object was drawn


def test_int8_model_export_is_a_quarter_of_float32_and_within_half_a_step(tmp_path):
    cfg = preset("tiny")
    torch.manual_seed(0)
    model = DiffusionGS(cfg)
    model_io.export_model(tmp_path / "m8", cfg, model, torch.int8)
    model_io.export_model(tmp_path / "m32", cfg, model, torch.float32)
    size8 = (tmp_path / "m8" / "model.safetensors").stat().st_size
    assert size8 < 0.3 * (tmp_path / "m32" / "model.safetensors").stat().st_size
    back = model_io.load_model(tmp_path / "m8")
    for name, value in model.state_dict().items():
        got = back.state_dict()[name]
        if value.dim() >= 2:
            step = value.flatten(1).abs().amax(1, keepdim=True) / 127
            bound = step / 2 + value.flatten(1).abs() * 2**-22 + 1e-12  # half a step plus float32 rounding
            assert ((got - value).flatten(1).abs() <= bound).all(), name
        else:  # float16 storage: half an ulp
            assert ((got - value).abs() <= value.abs() * 2**-11 + 2**-25).all(), name
