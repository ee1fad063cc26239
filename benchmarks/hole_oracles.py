r"""Probe: where do the hole pixels of the synthetic rooms lie, and how much is knowing it worth?

    python benchmarks/hole_oracles.py --data_root HARD --json benchmarks/results/hole_oracles_256_hard920001.json

HARD: a prepared `panowan synth` set (its `synth_stats.json` names the seed and difficulty, from which every room's
scene is rebuilt exactly; the rebuilt range must match the stored ground truth or the room is refused). For every
target view, over the pixels view 0 does not see (the holes):

- where they lie: the room's shell (walls, floor, ceiling), an object that view 0 sees elsewhere, or an object view 0
  does not see at all;
- hole PSNR of the two best classical fills (harmonic, depth-steered), and of fills that are told something no fill
  of the boundary knows (oracles, to bound what a model could learn):
  - `true_depth`: the depth-steered colour fill (`data.depth_fill.fill_rgb_on_surface`) given the true depth;
  - `material`: each hole pixel filled by the membrane of the known pixels of its own material only (walls, floor,
    ceiling, each object; Neumann at every other pixel), `data.room_shell.fill_by_label`;
  - `shell`: the same for the shell's three surfaces only, the objects' hole pixels by the harmonic fill;
  - `layout`: the hole pixels labelled by the surface their ray meets in the *empty* room (what a fit of the room's
    planes could give), the known pixels by their true surface; and `layout_blend`, that fill mixed with the
    harmonic one by the membrane of the known pixels' shell indicator (a soft "is this hole pixel shell?");
  - `known_labels`: labels at the known pixels only (shell surfaces and "object"), the hole pixels' labels by the
    membrane of their one-hot codes: what the boundary alone says about the labels;
  - `true_texture`: every pixel's true albedo (the renderer's `shade_material`), the light only estimated (linear
    RGB / albedo at the known pixels with albedo >= 0.02 in every channel, then `material`'s membrane within each
    material): bounds a fill that knows the texture exactly, so its gap to the truth is what the lighting costs;
  - `true_light`: the complement: the true light (ambient plus the point lights), the albedo estimated the same
    way (linear RGB / light): bounds a fill that knows the shading, so its gap is what the texture costs. For both,
    albedo x light through the display gamma must give the stored ground truth (else the room is refused);
  - `see_through`: the hole pixels on the shell read from view 0's render of the *empty* room where view 0 would see
    their true point (furniture holes by the harmonic fill): the shell's texture as view 0 would see it if nothing
    stood in the way, at view 0's resolution; bounds what continuing the shell's texture from view 0 can give
    (compare with `shell`, the same labels with a membrane instead of the texture); `see_through_fitted`: the same
    texture read at the points of the *fitted* shell, with the room-shell fill's labels and weights (compare with
    `room_shell`): what the texture adds to today's geometry; `true_gate`: `room_shell` with the true "shell or
    furniture" of each hole pixel as its weight p (what a perfect learned gate would add to today's geometry).
Mean over the views with a hole (the benchmark's per-view average). CPU, about 20 s for 8 rooms of 5 views at 256x512.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from panowan.data.dataset import validate_room
from panowan.data.depth_fill import fill_rgb_on_surface
from panowan.data.inpaint import harmonic_fill
from panowan.data.io import read_depth, read_rgb
from panowan.data.layout import scan_rooms
from panowan.data.room_shell import RoomShell, fill_by_label, fit_room, shell_view
from panowan.data.synth import cast_rays, make_scene, room_seed
from panowan.data.synth.raycast import albedo_and_light
from panowan.eval.baselines import baseline_view, read_condition
from panowan.geometry.erp import directions_to_pixels, erp_directions_N3

OBJECT = 3  # the material ids of the synthetic rooms: 0 wall, 1 floor, 2 ceiling, 3 + k object k
METHODS = (
    "harmonic",
    "depth_steered",
    "room_shell",
    "true_depth",
    "material",
    "shell",
    "layout",
    "layout_blend",
    "known_labels",
    "true_texture",
    "true_light",
    "see_through",
    "see_through_fitted",
    "true_gate",
)
# Known pixels whose true albedo (or light) is below this in a channel give no estimate of the other factor.
MIN_FACTOR = 0.02


def hole_psnr(pred: np.ndarray, gt: np.ndarray, hole: np.ndarray) -> float:
    err = ((pred.astype(np.float64) - gt.astype(np.float64)) / 255) ** 2
    return float(10 * np.log10(1 / max(err[hole].mean(), 1e-10)))


def interpolated_labels(known_HW: np.ndarray, label_HW: np.ndarray, classes: list[int]) -> np.ndarray:
    """The known pixels' labels, and each hole pixel's the arg max of the membrane of the classes' one-hot codes."""
    onehot = np.stack([known_HW & (label_HW == c) for c in classes], -1).astype(np.float64)
    winner = np.asarray(classes)[harmonic_fill(onehot, ~known_HW).argmax(-1)]
    return np.where(known_HW, label_HW, winner)


def to_srgb(linear: np.ndarray) -> np.ndarray:
    return np.round(255 * np.clip(linear, 0, 1) ** (1 / 2.2))


def factor_fill(linear, true, known, mat, harmonic) -> np.ndarray:
    """The prediction given the `true` factor (albedo or light) everywhere, the other one estimated: linear RGB / true
    at the known pixels where true >= MIN_FACTOR, filled within each material (`fill_by_label`), fallback harmonic."""
    usable = known & (true >= MIN_FACTOR).all(-1)
    other = np.where(usable[..., None], linear / np.maximum(true, MIN_FACTOR), 0)
    base = harmonic_fill(other, ~usable)
    return to_srgb(true * fill_by_label(base, usable, mat))


def empty_room_view0(scene, h: int, w: int) -> np.ndarray:
    """View 0's render of the empty room (the shell, as if no furniture stood in its way), sRGB float `H,W,3`."""
    origin, rays = (
        scene.poses[0].position.double().numpy(),
        erp_directions_N3(h, w) @ scene.poses[0].rotation.double().numpy(),
    )
    t, normal, mat = cast_rays(scene, origin, rays, objects=False)
    albedo, light = albedo_and_light(scene, origin + t[:, None] * rays, normal, mat)
    return to_srgb(albedo * light).reshape(h, w, 3)


def sample_view0(image_HW3: np.ndarray, points_N3: np.ndarray, pose0) -> np.ndarray:
    """`image_HW3` (view 0's ERP) bilinearly at the pixels where view 0 sees `points_N3` (world), `N x 3`."""
    h, w = image_HW3.shape[:2]
    d = (points_N3 - pose0.position.double().numpy()) @ pose0.rotation.double().numpy().T
    uv = directions_to_pixels(torch.from_numpy(d), h, w).numpy()
    x, y = uv[:, 0], np.clip(uv[:, 1], 0, h - 1)  # integers are pixel centres
    x0, y0 = np.floor(x).astype(np.int64), np.minimum(np.floor(y).astype(np.int64), h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    at = lambda yy, xx: image_HW3[yy, xx % w]  # noqa: E731
    top = (1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)
    return (1 - fy) * top + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1))


def see_through_fitted(rgb, depth, known, pose, shell: RoomShell, empty0, pose0, true_shell_HW):
    """(`room_shell` with the see-through texture in place of each surface's membrane: the fill's own labels, cast
    points and shell weight `p` (`data.room_shell.shell_view`), the colour at the cast point from `empty0`;
    `room_shell` with its weight `p` replaced by the truth, `true_shell_HW`: 1 on the shell, 0 on furniture)."""
    sv = shell_view(rgb, np.where(known, depth, 0.0), known, pose, shell)
    h, w = known.shape
    texture = fill_by_label(sv.harmonic, known, sv.label)
    cast = ~known & np.isfinite(sv.cast_range) & (sv.label >= 0)
    rays = erp_directions_N3(h, w) @ pose.rotation.double().numpy()
    hit = pose.position.double().numpy() + rays.reshape(h, w, 3)[cast] * sv.cast_range[cast][:, None]
    gate = true_shell_HW.astype(np.float64)[..., None]
    gated = gate * texture + (1 - gate) * sv.harmonic
    texture[cast] = sample_view0(empty0, hit, pose0)
    return sv.p[..., None] * texture + (1 - sv.p[..., None]) * sv.harmonic, gated


def view_row(scene, info, view: int, seen_by_view0: set[int], shell: RoomShell, empty0) -> dict | None:
    h, w = info.size
    rays = erp_directions_N3(h, w) @ scene.poses[view].rotation.double().numpy()
    origin = scene.poses[view].position.double().numpy()
    t, normal, mat = cast_rays(scene, origin, rays)
    albedo, light = (
        a.reshape(h, w, 3) for a in albedo_and_light(scene, origin + t[:, None] * rays, normal, mat)
    )
    _, _, mat_empty = cast_rays(scene, origin, rays, objects=False)
    mat, mat_empty = mat.reshape(h, w).astype(np.int64), mat_empty.reshape(h, w).astype(np.int64)
    gt_depth = read_depth(info.paths.gt_depth(view), info.size, info.paths.root)
    if not np.allclose(t.reshape(h, w), gt_depth, rtol=1e-3, atol=1e-3):
        raise ValueError(
            f"{info.paths.root}: view {view} is not the scene its synth_stats.json seed rebuilds"
        )
    rgb, depth, known = read_condition(info, view)
    hole = ~known
    if not hole.any():
        return None
    gt = read_rgb(info.paths.gt_rgb(view), info.size, info.paths.root)
    off = np.abs(to_srgb(albedo * light) - gt).max(-1) > 1
    if off.mean() > 1e-3:
        raise ValueError(
            f"{info.paths.root}: view {view}: albedo x light misses the ground truth at {off.sum()} pixels"
        )
    linear = (rgb / 255.0) ** 2.2
    harmonic, harmonic_range = baseline_view(rgb, depth, known, "harmonic")
    steered, steered_range = baseline_view(rgb, depth, known, "depth_steered")
    surface = np.minimum(mat, OBJECT)  # wall, floor, ceiling, or any object
    is_shell = np.stack([surface < OBJECT, surface == OBJECT], -1).astype(np.float64)
    p_shell = harmonic_fill(np.where(known[..., None], is_shell, 0), hole)[..., :1]
    layout = fill_by_label(harmonic, known, np.where(known, surface, mat_empty))
    base = np.where(known[..., None], rgb, 0).astype(np.uint8)
    pose = info.poses[info.views.index(view)]
    shell_rgb, shell_range = baseline_view(rgb, depth, known, "room_shell", (pose, shell))
    fills = {
        "room_shell": shell_rgb,
        "harmonic": harmonic,
        "depth_steered": steered,
        "true_depth": fill_rgb_on_surface(base, np.where(known, depth, gt_depth).astype(np.float32), known),
        "material": fill_by_label(harmonic, known, mat),
        "shell": fill_by_label(harmonic, known, np.where(surface < OBJECT, surface, -1)),
        "layout": layout,
        "layout_blend": p_shell * layout + (1 - p_shell) * harmonic,
        "known_labels": fill_by_label(harmonic, known, np.where(
            (lab := interpolated_labels(known, surface, [0, 1, 2, OBJECT])) == OBJECT, -1, lab)),
        "true_texture": factor_fill(linear, albedo, known, mat, harmonic),
        "true_light": factor_fill(linear, light, known, mat, harmonic),
        "see_through": harmonic.copy(),
    }  # fmt: skip
    on_shell_hole = hole & (mat < OBJECT)
    points = (origin + t[:, None] * rays).reshape(h, w, 3)[on_shell_hole]
    fills["see_through"][on_shell_hole] = sample_view0(empty0, points, scene.poses[0])
    fills["see_through_fitted"], fills["true_gate"] = see_through_fitted(
        rgb, depth, known, pose, shell, empty0, scene.poses[0], mat < OBJECT
    )
    hole_mat = mat[hole]
    row = {"view": view, "hole_fraction": float(hole.mean()), "on_shell": float((hole_mat < OBJECT).mean()),
           "on_object_seen_by_view0": float(np.isin(hole_mat, sorted(seen_by_view0 - {0, 1, 2})).mean()),
           "known_labels_accuracy": float((lab[hole] == surface[hole]).mean())}  # fmt: skip
    row["on_object_unseen_by_view0"] = 1.0 - row["on_shell"] - row["on_object_seen_by_view0"]
    row.update({name: hole_psnr(fills[name], gt, hole) for name in METHODS})
    measured = hole & (gt_depth > 0)
    ranges = {"harmonic": harmonic_range, "depth_steered": steered_range, "room_shell": shell_range}
    for name, r in ranges.items():
        row[f"absrel_{name}"] = float(np.mean(np.abs(r[measured] - gt_depth[measured]) / gt_depth[measured]))
    return row


def room_rows(room: Path, seed: int, difficulty: str) -> list[dict]:
    info = validate_room(room)
    index = int(room.name.split("_")[-1])
    scene = make_scene(room_seed(seed, index), len(info.views), difficulty)
    h, w = info.size
    rays0 = erp_directions_N3(h, w) @ scene.poses[0].rotation.double().numpy()
    seen = set(np.unique(cast_rays(scene, scene.poses[0].position.double().numpy(), rays0)[2]).tolist())
    shell = fit_room(info)
    empty0 = empty_room_view0(scene, h, w)
    rows = [view_row(scene, info, view, seen, shell, empty0) for view in info.views[1:]]
    return [{"room": info.paths.room_id, **r} for r in rows if r is not None]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data_root", required=True, help="a prepared `panowan synth` set (with synth_stats.json)"
    )
    p.add_argument("--json", default=None, help="write the means and every view's row here")
    args = p.parse_args(argv)
    stats_file = Path(args.data_root) / "synth_stats.json"
    if not stats_file.is_file():
        raise SystemExit(f"{stats_file}: missing; the scenes are rebuilt from the seed it records")
    stats = json.loads(stats_file.read_text())
    rows = [
        r for room in scan_rooms(args.data_root) for r in room_rows(room, stats["seed"], stats["difficulty"])
    ]
    keys = [k for k in rows[0] if k not in ("room", "view")]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    for k in keys:
        print(f"{k:24s} {mean[k]:8.3f}")
    result = {"data_root": args.data_root, "seed": stats["seed"], "difficulty": stats["difficulty"],
              "views": len(rows), "mean": mean, "rows": rows, "command": " ".join(["python", *sys.argv])}  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
