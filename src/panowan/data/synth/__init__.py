"""Procedural rooms rendered exactly by analytic ray casting, written in the seed layout (NOTES.md).

Placeholder docstring (rewritten below).
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
