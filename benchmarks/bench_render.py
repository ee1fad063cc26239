"""Benchmark `panowan render` on the CPU: rays per second on a mesh of >= 500k faces (built here), and the
time to render one room of 9 views at 512x1024 (load, Embree build, viewpoint search, rendering, writing).

    python benchmarks/bench_render.py --json benchmarks/results/render_cpu.json

The mesh: an 8 x 6 x 3 m vertex-coloured room (the tests' box rooms, tests/render/render_scenes.py) whose six
faces are finely tessellated, with tessellated furniture boxes and three icospheres (521k triangles), written as
a ply (z up) and read back as a user's would be.
Rays/s: first hits of the 524,288 pixel-centre rays of a 512x1024 panorama from the room's middle, through
`Caster.cast` (Embree plus this package's bookkeeping), and with colour lookup (`render_view`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "render"))
from render_scenes import box_quads, quad_mesh  # the tests' box rooms, tessellated


def build_mesh(path: Path, grid: int = 170) -> int:
    """The benchmark room (z up) as a vertex-coloured ply; returns its face count."""
    import trimesh

    rng = np.random.default_rng(0)
    room = box_quads(np.array([0.0, 0, 0]), np.array([8.0, 6, 3]), True, 0, rng)
    furniture = [q for lo, hi in (([1, 1, 0], [2.5, 2, 0.75]), ([6.5, 0, 0], [8, 1, 2.1]), ([3, 4.5, 0], [5, 6, 0.5]))
                 for q in box_quads(np.array(lo, float), np.array(hi, float), False, 1, rng)]  # fmt: skip
    parts = [quad_mesh(room, grid), quad_mesh(furniture, grid // 3)]
    for centre in ([4, 3, 0.4], [2, 4.5, 1.0], [6, 2, 2.5]):
        sphere = trimesh.creation.icosphere(subdivisions=5, radius=0.35)
        sphere.apply_translation(centre)
        n = len(sphere.vertices)
        sphere.visual.vertex_colors = np.c_[rng.integers(30, 230, (n, 3)), np.full(n, 255)].astype(np.uint8)
        parts.append(sphere)
    mesh = trimesh.util.concatenate(parts)
    mesh.export(path)
    return len(mesh.faces)


def rays_per_second(mesh_path: Path, runs: int) -> dict:
    import torch

    from panowan.data.render.mesh_io import load_mesh
    from panowan.data.render.raycast import Caster, render_view, world_directions
    from panowan.data.render.viewpoints import upright_rotation
    from panowan.geometry.pose import Pose

    t0 = time.perf_counter()
    mesh = load_mesh(mesh_path)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    caster = Caster(mesh)
    t_build = time.perf_counter() - t0
    pose = Pose(torch.from_numpy(upright_rotation(np.array([0.0, 0, 1]), 0.3)), torch.tensor([4.1, 2.9, 1.5]))
    dirs = world_directions(pose, 512, 1024)
    origin = pose.position.numpy()[None]
    caster.cast(origin, dirs)  # warm-up (BVH build happens lazily on the first call in some versions)
    cast_s, cast_cpu, view_s = [], [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        hits = caster.cast(origin, dirs)
        cast_s.append(time.perf_counter() - t0)
        cast_cpu.append(time.process_time() - c0)
        t0 = time.perf_counter()
        render_view(caster, pose, 512, 1024)
        view_s.append(time.perf_counter() - t0)
    n = len(dirs)
    return {
        "faces": len(mesh.faces_F3),
        "rays": n,
        "hit_fraction": float(hits.hit.mean()),
        "load_s": round(t_load, 3),
        "caster_build_s": round(t_build, 3),
        "cast_s": [round(t, 4) for t in cast_s],
        "rays_per_s_first_hit": round(n / statistics.median(cast_s)),
        "cast_cpu_over_wall": round(sum(cast_cpu) / sum(cast_s), 2),  # ~1: Embree traces on one core here
        "render_view_s": [round(t, 4) for t in view_s],
        "rays_per_s_with_colour": round(n / statistics.median(view_s)),
        "caster": caster.name,
    }


def room_time(meshes: list[Path], out: Path, supersample: int, workers: int = 1) -> dict:
    """Wall seconds of `render_rooms` for these meshes (9 views at 512x1024 each), from loading to the files."""
    from panowan.data.render import RenderSettings, plan_rooms, render_rooms

    settings = RenderSettings(views=9, height=512, width=1024, seed=0, supersample=supersample)
    t0 = time.perf_counter()
    summary = render_rooms(
        out, plan_rooms(out, meshes), settings, progress=False, overwrite=True, workers=workers
    )
    seconds = time.perf_counter() - t0
    assert not summary.failed, summary.failed
    record = next(iter(summary.records.values()))
    return {"rooms": len(meshes), "workers": workers, "supersample": supersample, "seconds": round(seconds, 2),
            "views_per_room": 9, "height": 512, "width": 1024,
            "rays_per_room": 9 * 512 * 1024 * (1 + (supersample**2 if supersample > 1 else 0)),
            "rejected_candidates_room_0": record["rejected_candidates"]}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/render_cpu.json")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--grid", type=int, default=170, help="tessellation of each room face (faces grow as grid^2)"
    )
    args = parser.parse_args()
    from panowan.utils.atomic import atomic_write_json

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        mesh_path = Path(tmp) / "scans" / "bench_room.ply"
        mesh_path.parent.mkdir(parents=True)
        faces = build_mesh(mesh_path, args.grid)
        assert faces >= 500_000, faces
        result = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
            "python": sys.version.split()[0],
            "mesh_faces": faces,
            "rays": rays_per_second(mesh_path, args.runs),
            "rooms": [room_time([mesh_path], Path(tmp) / "data", k) for k in (1, 2)],
        }
        twin = mesh_path.parent / "bench_room_b.ply"
        twin.write_bytes(mesh_path.read_bytes())
        result["rooms"].append(room_time([mesh_path, twin], Path(tmp) / "data2", 1, workers=2))
    result["load_average_before_after"] = [round(x, 2) for x in (*load_before[:1], os.getloadavg()[0])]
    atomic_write_json(args.json, result)
    print(f"{faces} faces: {result['rays']['rays_per_s_first_hit'] / 1e6:.2f} M rays/s first hit, "
          f"{result['rays']['rays_per_s_with_colour'] / 1e6:.2f} M rays/s with colour; 9 views at 512x1024: "
          + ", ".join(f"{r['rooms']} room(s) in {r['seconds']} s (supersample {r['supersample']}, {r['workers']} "
                      f"worker(s))" for r in result["rooms"]))  # fmt: skip
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
