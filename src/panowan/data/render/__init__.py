"""`panowan render`: rooms in the seed layout from scanned meshes (HM3D, ScanNet, Replica, any glb / ply / obj).

Conventions (also in `panowan render --help` and docs/RENDERING.md):

- **World frame = the mesh's own coordinates**, unchanged: no recentring, no axis swap, no scaling. Pose
  positions are camera centres in the mesh's units and origin; each quaternion (w, x, y, z) rotates
  mesh-world coordinates into the camera frame of the data contract (x right, y down, z forward).
- Cameras are level with respect to `--up_axis` (camera -y = world up) and turned by a seeded random yaw.
  Default up axis: `y` for glTF / glb (the glTF specification), `z` for ply / obj (ScanNet, Replica,
  Matterport obj).
- Depth is the radial distance to the first hit (`panowan.geometry.erp` rays); rays that hit nothing have
  depth 0 and colour 0 and are counted per view in `DATA_ROOT/render_stats.json`.
- Colour is the mesh's own (vertex colours, face colours, or a texture through UVs; scans have lighting
  baked in, so no shading is added); parts with none are grey, with a warning.

Modules: `mesh_io` (loading, hostile-input checks, colour source), `raycast` (Embree casting, colours at
hits, supersampled views), `viewpoints` (free-space sampling), `write` (rooms, skip, pool, stats).
"""

from panowan.data.render.mesh_io import MeshData, default_up_axis, load_mesh, up_vector
from panowan.data.render.viewpoints import NoFreeSpace, ViewpointSettings
from panowan.data.render.write import (
    STATS_FILE,
    RenderSettings,
    RenderSummary,
    find_meshes,
    plan_rooms,
    render_room,
    render_rooms,
)

__all__ = [
    "STATS_FILE",
    "MeshData",
    "NoFreeSpace",
    "RenderSettings",
    "RenderSummary",
    "ViewpointSettings",
    "default_up_axis",
    "find_meshes",
    "load_mesh",
    "plan_rooms",
    "render_room",
    "render_rooms",
    "up_vector",
]
