"""Write the conditioning inputs of every room under --data_root: view 0's panorama and depth reprojected
into every view X as input/pano0000_to_panoXXXX_{rgb.png,depth_range.npy,mask.png} (unknown pixels 0,
mask 255 = known). Idempotent: complete rooms are skipped unless --overwrite. Rooms that cannot be
prepared are reported with their path and reason, and the exit code is 1 if there was any.
SIGTERM / SIGINT: the rooms being prepared are finished, no other is begun, and the exit code is 128 + the
signal number (143, 130: the work is not done, so `panowan prepare && panowan train` does not go on); the
same command then prepares only the missing rooms. A second signal kills at once (files stay whole)."""

from __future__ import annotations

import argparse

HELP = "reproject view 0 into every view of every room (conditioning inputs)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data_root", required=True, help="data root holding {area}/{room} folders")
    parser.add_argument("--overwrite", action="store_true", help="redo rooms that are already prepared")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (one room each)")
    parser.add_argument("--pose_position_key", default="position", help="pose JSON key of the camera centre")
    parser.add_argument(
        "--pose_rotation_key", default="rotation_quaternion", help="pose JSON key of the quaternion"
    )
    parser.add_argument("--pose_quaternion_order", default="wxyz", choices=["wxyz", "xyzw"],
                        help="component order of the stored quaternion")  # fmt: skip
    parser.add_argument("--pose_direction", default="world_to_camera", choices=["world_to_camera", "camera_to_world"],
                        help="what the stored rotation maps")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import sys

    from panowan.data.prepare import prepare_rooms
    from panowan.geometry.pose import PoseFormat
    from panowan.utils.signals import StopRequest, exit_code

    fmt = PoseFormat(
        args.pose_position_key, args.pose_rotation_key, args.pose_quaternion_order, args.pose_direction
    )
    with StopRequest() as stop:
        summary = prepare_rooms(
            args.data_root, overwrite=args.overwrite, workers=args.workers, pose_format=fmt, stop=stop
        )
    print(
        f"prepared {len(summary.prepared)}, already complete {len(summary.skipped)}, failed {len(summary.failed)}"
    )
    for room, reason in summary.failed:
        print(f"FAILED {room}: {reason}", file=sys.stderr)
    if summary.stopped_by is not None:
        print(f"received {summary.stopped_by}: stopped before {summary.remaining} of {summary.total} rooms were "
              "done; rerun the same command to prepare the rest", file=sys.stderr)  # fmt: skip
        return exit_code(stop.signum)
    return 1 if summary.failed else 0
