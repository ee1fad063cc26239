"""`panowan render` on rooms built with trimesh (textured glb, vertex-coloured ply, obj with a material), against
the analytic depth and colour of the same quads; both up-axis conventions; the free-space rules; seeds."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from render_scenes import (
    box_distance,
    cast,
    make_quads,
    quadrant_colour,
    up_rotation,
    write_glb,
    write_obj,
    write_ply,
)

from panowan.data.render import RenderSettings, ViewpointSettings, plan_rooms, render_rooms
from panowan.data.room_checks import check_full_depth, validate_room
from panowan.geometry.erp import erp_directions
from panowan.geometry.pose import load_pose

H, W, VIEWS = 32, 64, 5


def render(mesh: Path, out: Path, **kw) -> Path:
    """Render one mesh with the test size; returns the room folder."""
    summary, room = render_summary(mesh, out, **kw)
    assert not summary.failed, summary.failed
    return room


def render_summary(mesh: Path, out: Path, **kw):
    settings = RenderSettings(**{"views": VIEWS, "height": H, "width": W, "seed": 3, "supersample": 1, **kw})
    plan = plan_rooms(out, [mesh])
    return render_rooms(out, plan, settings, progress=False), plan[0][1]


def view_rays(room: Path, view: int):
    pose = load_pose(room / "input" / f"pose_{view:04d}.json")
    dirs = erp_directions(H, W, dtype=torch.float64).reshape(-1, 3).numpy() @ pose.rotation.numpy()
    return pose, dirs


def check_against_analytic(room: Path, quads, up: np.ndarray, *, colour: str) -> None:
    """Every view: depth equals the exact quad casting; colour is the quad's (vertex) or its texture's."""
    lo_up = min(float(q.p0 @ up) for q in quads if abs(np.cross(q.e1, q.e2) @ up) > 0 and q.part == 0)
    positions = []
    for v in range(VIEWS):
        pose, dirs = view_rays(room, v)
        c = pose.position.numpy()
        positions.append(c)
        t, q, u, w = cast(quads, c, dirs)
        depth = np.load(room / "output" / f"panorama_{v:04d}_depth.npy")
        expected = np.where(np.isfinite(t), t, 0.0).reshape(H, W)
        assert depth.dtype == np.float32 and np.abs(depth - expected).max() < 1e-4, v
        rgb = cv2.imread(str(room / "output" / f"panorama_{v:04d}.png"))[..., ::-1].reshape(-1, 3)
        if colour == "vertex":
            want = np.array([quads[k].colour if k >= 0 else (0, 0, 0) for k in q])  # escaped: black
            use = np.ones(len(q), bool)
        else:
            want = quadrant_colour(u, w)
            margin = 0.04  # bilinear blending across quadrant borders and the wrapping UV edges
            use = (np.abs(u - 0.5) > margin) & (np.abs(w - 0.5) > margin) & (np.minimum(u, w) > margin)
            use &= np.maximum(u, w) < 1 - margin
        agree = np.all(np.abs(rgb.astype(int) - want.astype(int)) <= 1, axis=1)[use]
        assert agree.mean() > 0.99, (v, agree.mean())
        # Upright camera: its -y axis is world up; the free-space rules hold exactly.
        assert np.allclose(pose.rotation.numpy()[1], -up, atol=1e-9)
        assert c @ up == pytest.approx(lo_up + 1.5, abs=1e-6)
        assert box_distance(c, quads) >= 0.3
    gaps = [np.linalg.norm(p - positions[0]) for p in positions[1:]]
    assert all(1.0 <= g <= 4.0 for g in gaps), gaps


@pytest.mark.parametrize(("kind", "up"), [("glb", "y"), ("ply", "z"), ("obj", "z")])
def test_rendered_rooms_match_the_analytic_scene(tmp_path, kind, up) -> None:
    quads = make_quads(up)
    writer = {"glb": write_glb, "ply": write_ply, "obj": write_obj}[kind]
    mesh = writer(tmp_path / f"room.{kind}", quads)
    room = render(mesh, tmp_path / "data")  # default up axis of the file type
    info = validate_room_unprepared(room)
    assert info == VIEWS
    check_against_analytic(
        room, quads, up_rotation(up) @ [0, 1, 0], colour="vertex" if kind == "ply" else "texture"
    )
    stats = json.loads((tmp_path / "data" / "render_stats.json").read_text())
    record = stats["rooms"][f"{tmp_path.name}/room"]
    assert record["up_axis"] == up and record["escaped"] == [0] * VIEWS


def validate_room_unprepared(room: Path) -> int:
    """The checks `panowan prepare` / the dataset run on a room, before preparing: views, sizes, poses, depth."""
    from panowan.data.prepare import prepare_room

    assert prepare_room(room)
    info = validate_room(room)
    assert info.size == (H, W) and info.prompt == "room"
    for v in info.views:
        check_full_depth(np.load(info.paths.gt_depth(v)), info.paths, info.paths.gt_depth(v))
    return len(info.views)


def test_up_axis_override_renders_a_y_up_ply_upright(tmp_path) -> None:
    quads = make_quads("y")
    mesh = write_ply(tmp_path / "yup.ply", quads)
    wrong = render(mesh, tmp_path / "wrong")  # the ply default (z): a valid room lying on its side
    assert np.allclose(load_pose(wrong / "input" / "pose_0000.json").rotation.numpy()[1], [0, 0, -1])
    room = render(mesh, tmp_path / "data", up_axis="y")
    check_against_analytic(room, quads, np.array([0.0, 1.0, 0.0]), colour="vertex")
    flipped = make_quads("-y")
    room = render(write_ply(tmp_path / "down.ply", flipped), tmp_path / "flip", up_axis="-y")
    check_against_analytic(room, flipped, np.array([0.0, -1.0, 0.0]), colour="vertex")


def test_no_ceiling_is_accepted_and_escapes_counted(tmp_path) -> None:
    quads = [q for q in make_quads("z") if not (q.part == 0 and np.cross(q.e1, q.e2)[2] < 0)]
    assert len(quads) == 17  # the room's ceiling (facing down) is gone, as in ScanNet
    room = render(write_ply(tmp_path / "scan.ply", quads), tmp_path / "data")
    check_against_analytic(room, quads, np.array([0.0, 0.0, 1.0]), colour="vertex")
    record = json.loads((tmp_path / "data" / "render_stats.json").read_text())["rooms"][
        f"{tmp_path.name}/scan"
    ]
    for v, escaped in enumerate(record["escaped"]):
        depth = np.load(room / "output" / f"panorama_{v:04d}_depth.npy")
        assert escaped == int((depth == 0).sum()) > 0
        assert (depth[: H // 8] == 0).all()  # the zenith escapes
    summary, _ = render_summary(
        tmp_path / "scan.ply", tmp_path / "strict", viewpoints=ViewpointSettings(max_escape=0.05)
    )
    assert (
        "no free space for 5 views" in summary.failed[0][1] and "too many rays escape" in summary.failed[0][1]
    )


def test_same_seed_same_files_other_seed_other_views(tmp_path) -> None:
    mesh = write_glb(tmp_path / "room.glb", make_quads("y"))
    a, b = render(mesh, tmp_path / "a"), render(mesh, tmp_path / "b")
    c = render(mesh, tmp_path / "c", seed=4)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert len(files) == 3 * VIEWS + 3
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "input/pose_0001.json").read_bytes() != (c / "input/pose_0001.json").read_bytes()


def test_supersampling_smooths_edges_and_keeps_depth(tmp_path) -> None:
    mesh = write_glb(tmp_path / "room.glb", make_quads("y"))
    one, three = render(mesh, tmp_path / "k1"), render(mesh, tmp_path / "k3", supersample=3)
    for v in range(VIEWS):
        name = f"output/panorama_{v:04d}"
        assert np.array_equal(np.load(one / f"{name}_depth.npy"), np.load(three / f"{name}_depth.npy"))
        a, b = (cv2.imread(str(r / f"{name}.png")).astype(int) for r in (one, three))
        assert len(np.unique(b.reshape(-1, 3), axis=0)) > len(np.unique(a.reshape(-1, 3), axis=0))
        assert np.abs(a - b).mean() < 20  # the same picture, softened at the edges


def test_pure_python_fallback_agrees_with_embree(tmp_path, monkeypatch) -> None:
    import sys

    from panowan.data.render.mesh_io import load_mesh
    from panowan.data.render.raycast import Caster, render_view

    pytest.importorskip("rtree")
    mesh = load_mesh(write_glb(tmp_path / "room.glb", make_quads("y")))
    pose = load_pose(render(tmp_path / "room.glb", tmp_path / "data") / "input" / "pose_0002.json")
    fast = render_view(Caster(mesh), pose, 16, 32)
    monkeypatch.setitem(sys.modules, "embreex", None)
    with pytest.warns(UserWarning, match="embreex is not installed"):
        slow_caster = Caster(mesh)
    slow = render_view(slow_caster, pose, 16, 32)
    assert np.abs(fast.range - slow.range).max() < 1e-5
    assert (np.abs(fast.rgb.astype(int) - slow.rgb.astype(int)) <= 1).mean() > 0.99
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monkeypatch.setitem(sys.modules, "rtree", None)
        with pytest.raises(ValueError, match=r"pip install 'panowan\[render\]'"):
            Caster(mesh)


def test_targets_stay_in_sight_of_view_0(tmp_path) -> None:
    """Two closed rooms 0.2 m apart: every target lies in view 0's room (the other is within reach, not in sight)."""
    from render_scenes import Quad

    near = make_quads("z", furniture=False, room_size=(3.0, 2.6, 3.0))
    shift = np.array([3.2, 0.0, 0.0])
    quads = near + [Quad(q.p0 + shift, q.e1, q.e2, q.colour, q.part) for q in near]
    room = render(write_ply(tmp_path / "flat.ply", quads), tmp_path / "data", views=9, seed=1)
    sides = [load_pose(room / "input" / f"pose_{v:04d}.json").position[0].item() > 13.1 for v in range(9)]
    assert len(set(sides)) == 1, sides
    record = json.loads((tmp_path / "data" / "render_stats.json").read_text())["rooms"][
        f"{tmp_path.name}/flat"
    ]
    assert record["rejected_candidates"]["not in sight of view 0"] > 0


def test_no_camera_inside_furniture_or_outside_the_building(tmp_path) -> None:
    """A 2.4 m cabinet, and scanned ground around the building: a camera inside the cabinet or outside the walls is
    clear of every surface, with the floor right below, and is refused all the same."""
    from render_scenes import Quad

    from panowan.data.render.mesh_io import load_mesh
    from panowan.data.render.raycast import Caster
    from panowan.data.render.viewpoints import ViewpointSampler

    lo, hi = np.array([0.5, 0.0, 0.5]), np.array([2.9, 2.2, 2.9])
    origin = np.array([10.0, -0.5, 3.0])
    ground = Quad(origin + np.array([-20.0, -0.001, 25.0]), np.array([46.0, 0, 0]), np.array([0, 0, -45.0]),
                  np.array([90, 90, 90], np.uint8), 0)  # fmt: skip
    quads = [*make_quads("y", furniture=[(lo, hi)]), ground]
    mesh = write_glb(tmp_path / "store.glb", quads)
    sampler = ViewpointSampler(Caster(load_mesh(mesh)), np.array([0.0, 1.0, 0.0]), ViewpointSettings(),
                               np.random.default_rng(0))  # fmt: skip
    at = {name: origin + np.array(offset) for name, offset in
          (("inside", [1.7, 1.499, 1.7]), ("room", [4.5, 1.499, 3.5]), ("yard", [3.0, 1.499, 7.0]),
           ("field", [4.5, 1.499, 14.0]))}  # fmt: skip
    assert min(box_distance(p, quads) for p in at.values()) > 0.5
    assert sampler.check(at["room"], None) is None
    assert (
        sampler.check(at["inside"], None) == "sees the back of faces (inside an object or outside the scan)"
    )
    for name in ("yard", "field"):
        assert (
            sampler.check(at[name], None) == "no walls around just above the horizon (outside the scan?)"
        ), name
    room = render(mesh, tmp_path / "data", views=9)
    for v in range(9):
        c = load_pose(room / "input" / f"pose_{v:04d}.json").position.numpy() - origin
        assert not np.all((c > lo) & (c < hi)), (v, c)
        assert np.all((c > 0) & (c < [6.0, 2.6, 5.0])), (v, c)
