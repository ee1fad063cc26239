"""Procedural rooms rendered exactly by analytic ray casting, written in the seed layout (NOTES.md).

A scene is a closed room, the union of axis-aligned room boxes (free space), with objects inside it
(axis-aligned boxes, vertical capped cylinders, spheres), procedural textures evaluated at the 3D
hit point (no UV mapping) and Lambertian shading from a few point lights plus ambient (no shadows).
Every ray of an ERP view is cast in vectorised float64 numpy; the range written is the exact
distance along the unit ray. Because the boxes are finite, every ray ends at a finite distance.

Two generators, `make_scene(seed, num_views, difficulty)` (deterministic in `seed`):

- "easy" (`easy.py`, the library default; bit-for-bit the original generator): one box or an L of
  two boxes, 1-7 pieces of furniture, solid textures (checker, stripes, value noise, wood), cameras on
  a short random walk (0.3-0.9 m steps). ~3% of a target view is unseen from view 0 (256x512).
- "hard" (`hard.py`, `furniture.py`; the `panowan synth` default): a large box, an L, or two rooms
  joined by a doorway (a door box through the wall between them, a lintel above it); often a
  full-height partition wall with a gap; 5-15 multi-part items (tall cabinets, bookshelves with
  books, wardrobes, sofas, beds, tables and desks on legs, columns, ...); framed pictures on the
  walls; tiled, brick, panelled and plank surfaces; cameras scattered 1-4 m from view 0 within its
  sight. Typically 5-15% of a target view's pixels are unseen from view 0 at 256x512 (~9% on
  average; lower resolutions read higher, as grazing surfaces drop out of the reprojection).

The unseen fraction of a view (`stats.py`) is the hole of the mask `panowan prepare` writes: view 0's
range reprojected into the view with `panowan.geometry.reproject.reproject_erp`.
`synth_rooms(..., stats=True)` records it per room and view in `DATA_ROOT/synth_stats.json`.

Coordinates: world axes like the camera's (x right, y **down**, z forward) with view 0's camera centre at
the origin, so the pose JSON positions are already relative to view 0. Cameras only yaw: the
world->camera rotation of view i is `yaw_matrix(yaw_i)`. The floor is at y = +camera height of view 0.
Every camera is at least `CLEARANCE` from every wall and object (`is_free`).

Modules: `scene` (types, textures, colour words, free space), `raycast` (`cast_rays`, `render_view`),
`easy`, `hard`, `furniture`, `stats`, `write` (`make_scene`, `write_room`, `synth_rooms`).
"""

from __future__ import annotations

from panowan.data.synth.easy import describe, make_easy_scene
from panowan.data.synth.hard import make_hard_scene
from panowan.data.synth.raycast import cast_rays, render_view
from panowan.data.synth.scene import (
    CLEARANCE,
    Box,
    Cylinder,
    Light,
    Material,
    Scene,
    Sphere,
    color_name,
    is_free,
    shade_material,
    torch_from,
    value_noise,
)
from panowan.data.synth.stats import room_unseen_fractions
from panowan.data.synth.write import (
    DIFFICULTIES,
    STATS_FILE,
    SynthRooms,
    make_scene,
    room_dir,
    room_seed,
    synth_rooms,
    write_room,
)

__all__ = [
    "CLEARANCE",
    "DIFFICULTIES",
    "STATS_FILE",
    "Box",
    "Cylinder",
    "Light",
    "Material",
    "Scene",
    "Sphere",
    "SynthRooms",
    "cast_rays",
    "color_name",
    "describe",
    "is_free",
    "make_easy_scene",
    "make_hard_scene",
    "make_scene",
    "render_view",
    "room_dir",
    "room_seed",
    "room_unseen_fractions",
    "shade_material",
    "synth_rooms",
    "torch_from",
    "value_noise",
    "write_room",
]
