"""Bad input to `panowan render`: clear errors naming the file for one mesh, counted skips in batch mode;
reruns skip complete rooms and redo partial ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from render_scenes import make_quads, write_glb, write_obj, write_ply

from panowan.cli import main
from panowan.data.render import load_mesh

H, W = 16, 32


def cli(*args: str) -> int:
    return main(
        ["render", "--height", str(H), "--width", str(W), "--views", "3", "--supersample", "1", *args]
    )


def refused(capsys, mesh: Path, out: Path, *match: str) -> str:
    """`panowan render --mesh` fails with exit code 2 and an error naming the mesh and the problem."""
    assert cli("--mesh", str(mesh), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert str(mesh) in err, err
    for m in match:
        assert m in err, err
    return err


def test_missing_unreadable_empty_and_faceless_meshes(tmp_path, capsys) -> None:
    out = tmp_path / "data"
    refused(capsys, tmp_path / "nowhere.glb", out, "mesh file is missing")
    (tmp_path / "junk.ply").write_bytes(b"this is not a ply file at all")
    refused(capsys, tmp_path / "junk.ply", out, "cannot read the mesh")
    (tmp_path / "zero.obj").write_bytes(b"")
    refused(capsys, tmp_path / "zero.obj", out, "mesh file is empty")
    (tmp_path / "empty.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\n"
                                        "property float y\nproperty float z\nend_header\n")  # fmt: skip
    refused(capsys, tmp_path / "empty.ply", out, "empty")
    import trimesh

    trimesh.PointCloud(np.random.default_rng(0).random((50, 3))).export(tmp_path / "cloud.ply")
    refused(capsys, tmp_path / "cloud.ply", out, "has no faces")
    (tmp_path / "notes.txt").write_text("x")
    refused(capsys, tmp_path / "notes.txt", out, "unsupported mesh type")
    assert not list(out.rglob("*.png"))


def test_nan_vertices_are_refused(tmp_path, capsys) -> None:
    path = write_ply(tmp_path / "nan.ply", make_quads("z"))
    import trimesh

    mesh = trimesh.load(path, process=False)
    mesh.vertices[5] = [np.nan, 0.0, 1.0]
    mesh.export(path)
    refused(capsys, path, tmp_path / "data", "1 vertices have NaN/inf coordinates")


def test_unreadable_textures_and_missing_material_library(tmp_path, capsys) -> None:
    obj = write_obj(tmp_path / "room.obj", make_quads("z"))
    (tmp_path / "walls.png").write_bytes(b"not a png")
    refused(capsys, obj, tmp_path / "data", "texture", "walls.png", "cannot be read")
    (tmp_path / "walls.png").unlink()
    refused(capsys, obj, tmp_path / "data", "walls.png", "is missing")
    (tmp_path / "room.mtl").unlink()
    refused(capsys, obj, tmp_path / "data", "material library", "room.mtl")
    glb = write_glb(tmp_path / "room.glb", make_quads("y"))
    raw = bytearray(glb.read_bytes())
    start = raw.find(b"\x89PNG")
    raw[start : start + 8] = b"XXXXXXXX"  # the embedded texture's signature destroyed
    glb.write_bytes(bytes(raw))
    refused(capsys, glb, tmp_path / "data", "texture image 0", "cannot be read")


def test_uncoloured_mesh_renders_grey_with_a_warning(tmp_path) -> None:
    path = write_ply(tmp_path / "plain.ply", make_quads("z"), colours=False)
    with pytest.warns(UserWarning, match="no vertex colours and no texture; rendered grey"):
        assert load_mesh(path).grey_parts == 1
    assert cli("--mesh", str(path), "--out", str(tmp_path / "data")) == 0
    import cv2

    rgb = cv2.imread(str(tmp_path / "data" / tmp_path.name / "plain" / "output" / "panorama_0001.png"))
    assert (rgb == 128).all()
    record = json.loads((tmp_path / "data" / "render_stats.json").read_text())["rooms"][
        f"{tmp_path.name}/plain"
    ]
    assert record["grey_parts"] == 1 and "rendered grey" in record["warnings"][0]


def test_no_free_space_names_the_rules(tmp_path, capsys) -> None:
    low = write_ply(tmp_path / "crawlspace.ply", make_quads("z", furniture=False, room_size=(6.0, 1.2, 5.0)))
    err = refused(capsys, low, tmp_path / "data", "no free space for 3 views", "camera height 1.5")
    assert "floor not right below" in err or "clearance" in err
    small = write_ply(tmp_path / "closet.ply", make_quads("z", furniture=False, room_size=(1.0, 2.6, 1.0)))
    refused(capsys, small, tmp_path / "data", "no free space", "targets 1.0-4.0 from view 0")
    assert (
        cli(
            "--mesh",
            str(small),
            "--out",
            str(tmp_path / "data"),
            "--min_distance",
            "0.1",
            "--clearance",
            "0.2",
        )
        == 0
    )


def test_batch_counts_bad_meshes_and_reruns_skip_complete_rooms(tmp_path, capsys) -> None:
    meshes = tmp_path / "scans"
    for name in ("a", "b"):
        (meshes / name).mkdir(parents=True)
        write_ply(meshes / name / "mesh.ply", make_quads("z"))  # Replica style: one folder per room
    (meshes / "c").mkdir()
    (meshes / "c" / "mesh.ply").write_bytes(b"broken")
    out = tmp_path / "data"
    assert cli("--meshes", str(meshes), "--out", str(out), "--workers", "2") == 1
    captured = capsys.readouterr()
    assert "rendered 2, already complete 0, failed 1" in captured.out
    assert "c/mesh.ply" in captured.err and "cannot read the mesh" in captured.err
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*")) == ["a/mesh", "b/mesh"]
    first = (out / "a/mesh/output/panorama_0002_depth.npy").stat().st_mtime_ns
    # Rerun: complete rooms skipped (files untouched); a partial room is rendered again, stale files gone.
    (out / "b/mesh/output/panorama_0002.png").unlink()
    (out / "b/mesh/input/pano0000_to_pano0001_rgb.png").write_bytes(b"stale prepared file")
    (meshes / "c" / "mesh.ply").unlink()
    assert cli("--meshes", str(meshes), "--out", str(out), "--prepare") == 0
    assert "rendered 1, already complete 1, failed 0" in capsys.readouterr().out
    assert (out / "a/mesh/output/panorama_0002_depth.npy").stat().st_mtime_ns == first
    assert (out / "b/mesh/output/panorama_0002.png").is_file()
    from panowan.data.io import read_rgb

    assert read_rgb(out / "b/mesh/input/pano0000_to_pano0001_rgb.png").shape == (H, W, 3)  # prepared again
    stats = json.loads((out / "render_stats.json").read_text())
    assert sorted(stats["rooms"]) == ["a/mesh", "b/mesh"]


def test_two_meshes_one_room_is_refused(tmp_path, capsys) -> None:
    for sub in ("x", "y"):
        (tmp_path / "scans" / sub / "area").mkdir(parents=True)
        write_ply(tmp_path / "scans" / sub / "area" / "room.ply", make_quads("z"))
    assert cli("--meshes", str(tmp_path / "scans"), "--out", str(tmp_path / "data")) == 2
    assert "would both be written to" in capsys.readouterr().err


def test_missing_trimesh_says_how_to_install(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "trimesh", None)
    assert cli("--mesh", str(tmp_path / "x.glb"), "--out", str(tmp_path / "data")) == 2
    assert "pip install 'panowan[render]'" in capsys.readouterr().err


def test_find_meshes_pattern_and_exclude(tmp_path) -> None:
    from panowan.data.render import find_meshes

    for name in ("00001-abc/abc.glb", "00001-abc/abc.semantic.glb", "s0/s0_vh_clean_2.ply", "s0/s0_vh_clean.ply",
                 "notes/readme.txt", "s0/.hidden.ply"):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    names = lambda found: [p.relative_to(tmp_path).as_posix() for p in found]  # noqa: E731
    assert names(find_meshes(tmp_path)) == ["00001-abc/abc.glb", "00001-abc/abc.semantic.glb", "s0/s0_vh_clean.ply",
                                            "s0/s0_vh_clean_2.ply"]  # fmt: skip
    assert names(find_meshes(tmp_path, exclude="*.semantic.glb")) == ["00001-abc/abc.glb", "s0/s0_vh_clean.ply",
                                                                      "s0/s0_vh_clean_2.ply"]  # fmt: skip
    assert names(find_meshes(tmp_path, pattern="*_vh_clean_2.ply")) == ["s0/s0_vh_clean_2.ply"]
    with pytest.raises(ValueError, match="is not a directory"):
        find_meshes(tmp_path / "nowhere")


def test_gltf_with_external_buffers_reads_its_texture_and_refuses_a_broken_one(tmp_path, capsys) -> None:
    import trimesh

    from panowan.data.render.mesh_io import TEXTURE

    scene = trimesh.load(write_glb(tmp_path / "room.glb", make_quads("y")), force="scene")
    folder = tmp_path / "gltf"
    folder.mkdir()
    for name, data in scene.export(file_type="gltf").items():
        (folder / name).write_bytes(data)
    gltf = folder / "model.gltf"
    mesh = load_mesh(gltf)
    assert (mesh.face_mode_F == TEXTURE).all() and mesh.textures and mesh.textures[0].dtype == np.uint8
    doc = json.loads(gltf.read_text())
    image_buffer = (
        folder / doc["buffers"][doc["bufferViews"][doc["images"][0]["bufferView"]]["buffer"]]["uri"]
    )
    image_buffer.write_bytes(b"\0" * image_buffer.stat().st_size)
    refused(capsys, gltf, tmp_path / "data", "texture image 0", "cannot be read")
