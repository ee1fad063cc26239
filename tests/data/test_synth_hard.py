"""Hard synthetic rooms: closed, free cameras, deterministic, the new structures, unseen fractions, stats."""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import pytest

from panowan.data.layout import RoomPaths, scan_rooms
from panowan.data.synth import (
    CLEARANCE,
    DIFFICULTIES,
    STATS_FILE,
    Box,
    cast_rays,
    is_free,
    make_scene,
    render_view,
    room_seed,
    synth_rooms,
)
from panowan.data.synth.hard import TARGET_DISTANCE

SEEDS = range(8)


@pytest.fixture(scope="module")
def scenes():
    return {s: make_scene(room_seed(3, s), 6, "hard") for s in SEEDS}


def _dirs(h, w):
    from panowan.geometry.erp import erp_directions

    return erp_directions(h, w).double().numpy().reshape(-1, 3)


def test_hard_rooms_are_closed_and_renderable(scenes):
    dirs = _dirs(16, 32)
    for scene in scenes.values():
        for pose in scene.poses:
            origin = pose.position.numpy()
            t, normal, _ = cast_rays(scene, origin, dirs @ pose.rotation.numpy())
            assert np.all(np.isfinite(t)) and np.all(t > 0.29)  # every ray ends, >= clearance away
            assert np.allclose(np.linalg.norm(normal, axis=1), 1)
        rgb, rng = render_view(scene, scene.poses[-1], 16, 32)
        assert rgb.dtype == np.uint8 and rng.dtype == np.float32 and rgb.std() > 5
        # The shell alone: only room materials, never nearer than with the objects, and equal where the ray
        # met the shell anyway.
        pose = scene.poses[-1]
        t, _, mat = cast_rays(scene, pose.position.numpy(), dirs @ pose.rotation.numpy())
        t_shell, _, mat_shell = cast_rays(
            scene, pose.position.numpy(), dirs @ pose.rotation.numpy(), objects=False
        )
        assert mat_shell.max() <= 2 and np.all(t_shell >= t) and (mat >= 3).any()
        assert np.array_equal(t_shell[mat <= 2], t[mat <= 2]) and np.array_equal(
            mat_shell[mat <= 2], mat[mat <= 2]
        )


def test_hard_cameras_are_free_and_spread(scenes):
    for scene in scenes.values():
        positions = [p.position.numpy() for p in scene.poses]
        assert np.array_equal(positions[0], np.zeros(3))
        for p in positions:
            assert is_free((scene.room_boxes, scene.objects), p, CLEARANCE)
        dist = [np.linalg.norm(p) for p in positions[1:]]
        assert TARGET_DISTANCE[0] <= min(dist) and max(dist) <= TARGET_DISTANCE[1]
        for pose in scene.poses:  # yaw only
            r = pose.rotation.numpy()
            assert np.allclose(r[1], [0, 1, 0]) and np.allclose(r @ r.T, np.eye(3))


def test_hard_rooms_are_deterministic_in_the_seed(scenes):
    again = make_scene(room_seed(3, 1), 6, "hard")
    scene = scenes[1]
    assert again.description == scene.description and len(again.objects) == len(scene.objects)
    for a, b in zip(again.poses, scene.poses):
        assert np.array_equal(a.position.numpy(), b.position.numpy())
        assert np.array_equal(a.rotation.numpy(), b.rotation.numpy())
    for a, b in zip(render_view(again, again.poses[2], 16, 32), render_view(scene, scene.poses[2], 16, 32)):
        assert np.array_equal(a, b)
    assert scenes[2].description != scene.description


def test_hard_rooms_hold_the_new_structures():
    layouts, names, kinds = Counter(), Counter(), Counter()
    for s in range(30):
        scene = make_scene(room_seed(0, s), 2, "hard")
        layouts[scene.layout] += 1
        names.update({o.name for o in scene.objects})
        kinds.update({scene.wall.kind, scene.floor.kind, scene.ceiling.kind})
        assert len(scene.objects) >= 5
        if scene.layout == "two-room":
            assert len(scene.room_boxes) == 3 and "lintel" in {o.name for o in scene.objects}
    assert set(layouts) == {"rectangular", "L-shaped", "two-room"}, layouts
    for name in ("partition wall", "picture", "picture frame", "tall cabinet", "bookshelf", "table", "sofa"):
        assert names[name] > 0, (name, names)
    assert {"tiles", "bricks", "panels"} <= set(kinds), kinds


def test_the_doorway_passes_rays_and_the_wall_beside_it_does_not():
    scene = next(sc for s in range(40) if (sc := make_scene(room_seed(1, s), 2, "hard")).layout == "two-room")
    lintel = next(o for o in scene.objects if o.name == "lintel")
    floor_y = scene.room_boxes[0][1][1]
    thin = 0 if (lintel.hi - lintel.lo)[0] < (lintel.hi - lintel.lo)[2] else 2
    across = 2 - thin
    p = (lintel.lo + lintel.hi) / 2
    p[1] = (lintel.hi[1] + floor_y) / 2  # halfway up the door opening
    thickness = (lintel.hi - lintel.lo)[thin]
    for sign in (1.0, -1.0):
        d = np.zeros((1, 3))
        d[0, thin] = sign
        t, _, _ = cast_rays(scene, p, d)
        assert t[0] > thickness / 2 + 0.5  # through the opening well into both rooms
    up = np.array([[0.0, -1.0, 0.0]])
    t, _, mat = cast_rays(scene, p, up)
    assert t[0] == pytest.approx(p[1] - lintel.hi[1]) and scene.objects[mat[0] - 3] is lintel
    # Beside the opening (within the wall's thickness) is no free space: the wall is solid.
    beside = p.copy()
    beside[across] = lintel.hi[across] + 0.05
    assert not any(np.all((beside > lo) & (beside < hi)) for lo, hi in scene.room_boxes)
    assert isinstance(lintel, Box)


def test_unseen_fraction_is_plausible_and_stats_match_prepare(tmp_path):
    from panowan.data.io import read_mask
    from panowan.data.prepare import prepare_rooms

    rooms = synth_rooms(tmp_path, 6, 5, 64, 128, seed=7, difficulty="hard", stats=True)
    stats = json.loads((tmp_path / STATS_FILE).read_text())
    assert stats == rooms.stats and stats["difficulty"] == "hard" and stats["seed"] == 7
    targets = [f for r in stats["rooms"] for f in r["unseen"][1:]]
    assert len(stats["rooms"]) == 6 and all(
        len(r["unseen"]) == 5 and r["unseen"][0] == 0 for r in stats["rooms"]
    )
    u = stats["unseen"]
    assert u["count"] == 24 and u["mean"] == pytest.approx(np.mean(targets))
    assert u["min"] == min(targets) and u["max"] == max(targets)
    assert 0.03 <= u["mean"] <= 0.25, u
    # The fractions are the holes of the masks that `panowan prepare` writes.
    assert not prepare_rooms(tmp_path, progress=False).failed
    for room, record in zip(scan_rooms(tmp_path), stats["rooms"]):
        assert room.relative_to(tmp_path).as_posix() == record["room"]
        paths = RoomPaths(room)
        holes = [1 - read_mask(paths.cond_mask(v)).mean() for v in range(5)]
        assert holes == pytest.approx(record["unseen"], abs=0)


def test_easy_default_and_no_stats_file_unless_asked(tmp_path):
    rooms = synth_rooms(tmp_path, 1, 2, 16, 32, seed=0)
    assert rooms.stats is None and not (tmp_path / STATS_FILE).exists()
    assert make_scene(room_seed(0, 0), 2).description == make_scene(room_seed(0, 0), 2, "easy").description
    with pytest.raises(ValueError, match="difficulty"):
        synth_rooms(tmp_path, 1, 2, 16, 32, difficulty="medium")
    with pytest.raises(ValueError, match="difficulty"):
        make_scene(0, 2, "medium")


def test_cli_defaults_to_hard_and_prints_the_summary(tmp_path, capsys):
    from panowan.commands import synth as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(
        ["--out", str(tmp_path), "--rooms", "2", "--views", "3", "--height", "16", "--width", "32"]
    )
    assert (
        args.difficulty == "hard"
        and tuple(parser._option_string_actions["--difficulty"].choices) == DIFFICULTIES
    )
    assert command.run(args) == 0
    stats = json.loads((tmp_path / STATS_FILE).read_text())
    assert stats["difficulty"] == "hard" and len(stats["rooms"]) == 2
    assert f"mean {100 * stats['unseen']['mean']:.1f}%" in capsys.readouterr().out
