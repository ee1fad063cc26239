"""Render rooms in the seed data layout from scanned meshes (HM3D, ScanNet, Replica, any glb / ply / obj):
output/ ground truth (RGB + radial depth) of every view, input/ view 0, pose_XXXX.json and description.txt,
exactly as `panowan synth` writes them. One room per mesh: --mesh FILE writes DATA_ROOT/{area}/{room}
(area: --area, else the mesh's folder name; room: the file name without extensions); --meshes DIR does it
for every mesh under DIR, rooms in parallel (--workers), a mesh that cannot be rendered reported and
counted. A rerun skips complete rooms (--overwrite redoes them). --prepare runs `panowan prepare` after.

WORLD FRAME = THE MESH'S OWN COORDINATES, unchanged (no recentring, no axis swap): pose positions are in
the mesh's units and origin, and each quaternion maps mesh-world into the camera frame of the data
contract (x right, y down, z forward). Cameras are upright with respect to --up_axis (camera -y = world
up; default y for glTF/glb, z for ply/obj) and turned by a seeded random yaw. Lengths in flags are in the
mesh's units (metres for HM3D, ScanNet, Replica).

Viewpoints lie in free space: at --camera_height above the floor (the floor directly below), at least
--clearance from every surface, inside the scanned area (at most --max_escape of the rays escape or reach
beyond --max_range; few rays see the back of faces, as from inside furniture or outside the building;
walls all around just above the horizon),
views 1.. --min_distance..--max_distance from view 0 and in its line of sight. Rays that hit nothing give
depth 0, are counted per view in DATA_ROOT/render_stats.json, and a view with more than --max_escape of
them is resampled. Colour: vertex colours, or textures through UVs (no shading: scans bake their light);
uncoloured meshes are grey, with a warning. Needs trimesh and embreex: pip install 'panowan[render]'.
Scanned data is the user's, under its own licence; panowan ships none. See docs/RENDERING.md."""

from __future__ import annotations

import argparse

HELP = "render rooms (RGB + range panoramas, poses, prompts) in the seed layout from scanned meshes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--mesh", help="one mesh file (.glb, .gltf, .ply, .obj) -> one room")
    src.add_argument("--meshes", help="a folder: every mesh under it (recursive) -> one room each")
    parser.add_argument("--pattern", default=None,
                        help="with --meshes: only files whose name matches this glob (e.g. '*_vh_clean_2.ply' "
                        "for ScanNet, 'mesh.ply' for Replica); default: every .glb/.gltf/.ply/.obj")  # fmt: skip
    parser.add_argument("--exclude", default=None,
                        help="with --meshes: skip files whose name matches this glob (e.g. '*.semantic.glb' for "
                        "HM3D's semantic meshes)")  # fmt: skip
    parser.add_argument("--out", required=True, help="output data root; rooms go to OUT/{area}/{room}")
    parser.add_argument(
        "--area", default=None, help="area folder name (default: the folder holding each mesh)"
    )
    parser.add_argument("--views", type=int, default=9, help="views (camera positions) per room")
    parser.add_argument("--height", type=int, default=256, help="panorama height in pixels")
    parser.add_argument(
        "--width", type=int, default=512, help="panorama width in pixels (must be 2 x height)"
    )
    parser.add_argument("--seed", type=int, default=0,
                        help="random seed; each room's viewpoints derive from (seed, area/room)")  # fmt: skip
    parser.add_argument("--up_axis", choices=("x", "-x", "y", "-y", "z", "-z"), default=None,
                        help="world axis that points up in the mesh (default: y for .glb/.gltf, as glTF "
                        "specifies; z for .ply/.obj, as ScanNet, Replica and Matterport obj scans)")  # fmt: skip
    parser.add_argument("--description", default=None,
                        help="text prompt written to description.txt (default: the mesh file name as words)")  # fmt: skip
    parser.add_argument("--supersample", type=int, default=2,
                        help="anti-aliasing: colour is the mean of K x K rays per pixel (1: off); depth always "
                        "comes from the pixel centre")  # fmt: skip
    parser.add_argument("--camera_height", type=float, default=1.5, help="camera height above the floor")
    parser.add_argument("--clearance", type=float, default=0.3, help="minimum distance from every surface")
    parser.add_argument(
        "--min_distance", type=float, default=1.0, help="minimum distance of a target from view 0"
    )
    parser.add_argument(
        "--max_distance", type=float, default=4.0, help="maximum distance of a target from view 0"
    )
    parser.add_argument("--max_escape", type=float, default=0.6,
                        help="largest fraction of a view's rays that may hit nothing (holes; 0.6 accepts scans "
                        "with no ceiling, such as ScanNet); a view above it is resampled")  # fmt: skip
    parser.add_argument("--max_range", type=float, default=30.0,
                        help="a probe ray hitting beyond this counts as escaped when choosing viewpoints")  # fmt: skip
    parser.add_argument("--max_attempts", type=int, default=3000,
                        help="candidate viewpoints tried per room before giving up (no free space)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (one room each)")
    parser.add_argument(
        "--overwrite", action="store_true", help="render rooms that are already complete again"
    )
    parser.add_argument("--prepare", action="store_true", help="run `panowan prepare` on OUT afterwards")


def settings_from(args: argparse.Namespace):
    """The `RenderSettings` of the parsed flags."""
    from panowan.data.render import RenderSettings, ViewpointSettings

    viewpoints = ViewpointSettings(args.camera_height, args.clearance, args.min_distance, args.max_distance,
                                   args.max_escape, args.max_range, args.max_attempts)  # fmt: skip
    return RenderSettings(args.views, args.height, args.width, args.seed, args.up_axis, args.supersample,
                          args.description, viewpoints)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from panowan.data.render import find_meshes, plan_rooms, render_rooms
    from panowan.data.render.mesh_io import require_trimesh

    require_trimesh()
    settings = settings_from(args)
    settings.validate()
    if args.mesh:
        meshes = [Path(args.mesh)]
    else:
        root = Path(args.meshes)
        meshes = find_meshes(root, args.pattern, args.exclude)
        if not meshes:
            raise ValueError(f"{root}: no mesh files found (pattern {args.pattern or 'glb/gltf/ply/obj'})")
    plan = plan_rooms(args.out, meshes, args.area)
    summary = render_rooms(args.out, plan, settings, workers=args.workers, overwrite=args.overwrite)
    if args.mesh and summary.failed:
        raise ValueError(summary.failed[0][1])  # one mesh: its error is the command's error
    print(
        f"rendered {len(summary.rendered)}, already complete {len(summary.skipped)}, failed {len(summary.failed)}"
    )
    for room, reason in summary.failed:
        print(f"FAILED {room}: {reason}", file=sys.stderr)
    if args.prepare:
        from panowan.data.prepare import prepare_rooms

        prepared = prepare_rooms(args.out, workers=args.workers)  # re-rendered rooms lost theirs
        print(f"prepared {len(prepared.prepared)}, already complete {len(prepared.skipped)}, "
              f"failed {len(prepared.failed)}")  # fmt: skip
        if prepared.failed:
            return 1
    return 1 if summary.failed else 0
