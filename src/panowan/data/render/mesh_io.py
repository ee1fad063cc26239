"""Loading a scanned mesh for `panowan render`: one triangle soup with a colour source per face.

`load_mesh(path)` reads glb / gltf / ply / obj through trimesh (`process=False`: vertices, UVs and
colours stay exactly as stored, in the file's own coordinates and units; the glTF node transforms are
applied, so a glb is in its scene's world frame) and returns a `MeshData`:

- `vertices_V3` float64, `faces_F3` int64 (every part of a multi-part scene concatenated);
- per face a colour mode (`FACE`: the constant `face_rgb_F3`; `VERTEX`: barycentric mix of
  `vertex_rgb_V3`; `TEXTURE`: texture `face_texture_F` sampled at the barycentric mix of `vertex_uv_V2`,
  times `face_rgb_F3`, the glTF base colour factor), colours as float32 in [0, 1];
- `grey_parts`: how many parts had no colour and no texture (rendered grey, with a warning).

Every refusal is a `ValueError` that names the file: missing or unreadable file, empty mesh, no faces,
non-finite vertices, a texture (or OBJ material library) that cannot be read.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MESH_SUFFIXES = (".glb", ".gltf", ".ply", ".obj")
UP_AXES = ("x", "-x", "y", "-y", "z", "-z")
GREY = 0.5
"""Colour of parts with neither colours nor a texture."""
FACE, VERTEX, TEXTURE = 0, 1, 2
INSTALL_HINT = "panowan render needs trimesh and embreex: pip install 'panowan[render]'"


def require_trimesh():
    """The trimesh module, or a ValueError that says how to install it."""
    try:
        import trimesh
    except ModuleNotFoundError:
        raise ValueError(INSTALL_HINT) from None
    return trimesh


def default_up_axis(path: str | os.PathLike) -> str:
    """glTF is y-up by its specification; ply / obj scans (ScanNet, Replica, Matterport obj) are z-up."""
    return "y" if Path(path).suffix.lower() in (".glb", ".gltf") else "z"


def up_vector(axis: str) -> np.ndarray:
    """'z', '-y', ... -> the unit world vector that points up."""
    if axis not in UP_AXES:
        raise ValueError(f"--up_axis must be one of {UP_AXES}, got {axis!r}")
    v = np.zeros(3)
    v["xyz".index(axis[-1])] = -1.0 if axis.startswith("-") else 1.0
    return v


@dataclass
class MeshData:
    """A mesh ready to ray cast and colour (see the module docstring for the fields)."""

    path: Path
    vertices_V3: np.ndarray
    faces_F3: np.ndarray
    face_mode_F: np.ndarray
    face_rgb_F3: np.ndarray
    vertex_rgb_V3: np.ndarray
    vertex_uv_V2: np.ndarray
    face_texture_F: np.ndarray
    textures: list[np.ndarray] = field(default_factory=list)
    grey_parts: int = 0

    @property
    def face_normals_F3(self) -> np.ndarray:
        """Unit normals from the winding (v1 - v0) x (v2 - v0); zero for degenerate faces."""
        tri = self.vertices_V3[self.faces_F3]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        norm = np.linalg.norm(n, axis=1, keepdims=True)
        return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)

    @property
    def face_areas_F(self) -> np.ndarray:
        tri = self.vertices_V3[self.faces_F3]
        return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


# ------------------------------------------------------------------------------------ texture checks
def _check_image(data: bytes | Path, mesh: Path, what: str) -> None:
    from PIL import Image

    try:
        with Image.open(data if isinstance(data, Path) else io.BytesIO(data)) as im:
            im.load()
    except Exception as e:  # PIL raises many types; every one means the same to the user
        raise ValueError(f"{mesh}: texture {what} cannot be read ({type(e).__name__}: {e})") from None


def _gltf_json(path: Path) -> tuple[dict, bytes]:
    """The glTF JSON and the glb's binary chunk (b'' for a .gltf)."""
    raw = path.read_bytes()
    if path.suffix.lower() == ".gltf":
        return json.loads(raw), b""
    if len(raw) < 20 or raw[:4] != b"glTF":
        raise ValueError(f"{path}: not a glb file (bad header)")
    length, kind = struct.unpack_from("<II", raw, 12)
    doc = json.loads(raw[20 : 20 + length])
    offset, binary = 20 + length, b""
    if len(raw) >= offset + 8:
        blen, _ = struct.unpack_from("<II", raw, offset)
        binary = raw[offset + 8 : offset + 8 + blen]
    assert kind == 0x4E4F534A, "glb chunk 0 must be JSON"
    return doc, binary


def _gltf_buffer(doc: dict, index: int, path: Path, binary: bytes) -> bytes:
    """Bytes of glTF buffer `index`: the glb's binary chunk, a data URI or a file beside the glTF."""
    buffer = doc.get("buffers", [])[index]
    uri = buffer.get("uri")
    if uri is None:
        return binary
    if uri.startswith("data:"):
        return base64.b64decode(uri.split(",", 1)[1])
    file = path.parent / uri
    if not file.is_file():
        raise ValueError(f"{path}: buffer {file} is missing")
    return file.read_bytes()


def _check_gltf_textures(path: Path) -> None:
    """Decode every image a glb / gltf holds: trimesh drops an unreadable one silently (untextured)."""
    try:
        doc, binary = _gltf_json(path)
    except (json.JSONDecodeError, struct.error, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read the glTF header ({e})") from None
    views = doc.get("bufferViews", [])
    for k, image in enumerate(doc.get("images", [])):
        what = f"image {k} ({image.get('name') or image.get('uri') or image.get('mimeType', '?')})"
        if "bufferView" in image:
            view = views[image["bufferView"]]
            start = view.get("byteOffset", 0)
            data = _gltf_buffer(doc, view.get("buffer", 0), path, binary)
            _check_image(data[start : start + view["byteLength"]], path, what)
        elif str(image.get("uri", "")).startswith("data:"):
            _check_image(base64.b64decode(image["uri"].split(",", 1)[1]), path, what)
        elif "uri" in image:
            file = path.parent / image["uri"]
            if not file.is_file():
                raise ValueError(f"{path}: texture {file} is missing")
            _check_image(file, path, what)


def _check_obj_textures(path: Path) -> None:
    """Every `mtllib` of an obj must exist and every `map_Kd` texture it names must decode."""
    text = path.read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        if not line.startswith("mtllib"):
            continue
        mtl = path.parent / line.split(maxsplit=1)[1].strip()
        if not mtl.is_file():
            raise ValueError(f"{path}: material library {mtl} is missing")
        for entry in mtl.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = entry.split()
            if parts and parts[0] == "map_Kd":
                texture = mtl.parent / parts[-1]  # options (-s, -o ...) come before the file name
                if not texture.is_file():
                    raise ValueError(f"{path}: texture {texture} (from {mtl.name}) is missing")
                _check_image(texture, path, str(texture))


# --------------------------------------------------------------------------------------- colour parts
def _texture_of(material) -> tuple[np.ndarray | None, np.ndarray]:
    """(texture_HW3 uint8 or None, factor_3 in [0, 1]): glTF PBR base colour or an obj's map_Kd. Textures stay
    uint8 (a scan holds hundreds of megapixels of them); `raycast.sample_texture` converts what it reads."""
    image = getattr(material, "baseColorTexture", None)
    factor = getattr(material, "baseColorFactor", None)
    if image is None:
        image = getattr(material, "image", None)
        factor = None  # an obj's map_Kd is the colour itself (Kd is not multiplied in, as viewers do)
        if image is None and getattr(material, "diffuse", None) is not None:
            factor = material.diffuse
    rgb = np.ones(3) if factor is None else np.asarray(factor, dtype=np.float64)[:3] / 255.0
    if image is None:
        return None, rgb
    return np.asarray(image.convert("RGB"), dtype=np.uint8), rgb


def _part_colours(geom, nv: int, nf: int, textures: list[np.ndarray]):
    """(mode, face_rgb_F3, vertex_rgb_V3, uv_V2, texture index) of one trimesh part; mode None = grey."""
    visual = geom.visual
    face_rgb = np.full((nf, 3), GREY, np.float32)
    vrgb, uv = np.zeros((nv, 3), np.float32), np.zeros((nv, 2), np.float32)
    kind = getattr(visual, "kind", None)
    if kind == "vertex":
        return VERTEX, face_rgb, np.asarray(visual.vertex_colors, np.float32)[:, :3] / 255.0, uv, -1
    if kind == "face":
        return FACE, np.asarray(visual.face_colors, np.float32)[:, :3] / 255.0, vrgb, uv, -1
    material = getattr(visual, "material", None)
    if material is None:
        return None, face_rgb, vrgb, uv, -1
    texture, factor = _texture_of(material)
    face_rgb[:] = factor
    if texture is None or getattr(visual, "uv", None) is None or len(visual.uv) != nv:
        return FACE, face_rgb, vrgb, uv, -1  # a material colour without a (usable) texture
    textures.append(texture)
    return TEXTURE, face_rgb, vrgb, np.asarray(visual.uv, np.float32), len(textures) - 1


def _parts(path: Path):
    trimesh = require_trimesh()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = trimesh.load(str(path), force="scene", process=False)
    except Exception as e:  # trimesh raises whatever its parsers raise
        raise ValueError(f"{path}: cannot read the mesh ({type(e).__name__}: {e})") from None
    parts = loaded.dump(concatenate=False) if hasattr(loaded, "dump") else [loaded]
    meshes = [p for p in parts if isinstance(p, trimesh.Trimesh)]
    if not any(len(m.vertices) for m in parts if hasattr(m, "vertices")):
        raise ValueError(f"{path}: the mesh is empty (no vertices)")
    if not any(len(m.faces) for m in meshes):
        raise ValueError(f"{path}: the mesh has no faces (a point cloud?); panowan render needs triangles")
    return [m for m in meshes if len(m.faces)]


def load_mesh(path: str | os.PathLike) -> MeshData:
    """Read and check a mesh file; see the module docstring. Raises ValueError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: mesh file is missing")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh type {path.suffix!r}; expected one of {MESH_SUFFIXES}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the mesh file is empty")
    if path.suffix.lower() in (".glb", ".gltf"):
        _check_gltf_textures(path)
    elif path.suffix.lower() == ".obj":
        _check_obj_textures(path)
    textures: list[np.ndarray] = []
    cols: dict[str, list] = {k: [] for k in ("v", "f", "mode", "frgb", "vrgb", "uv", "tex")}
    offset, grey = 0, 0
    for geom in _parts(path):
        v, f = np.asarray(geom.vertices, np.float64), np.asarray(geom.faces, np.int64)
        mode, frgb, vrgb, uv, tex = _part_colours(geom, len(v), len(f), textures)
        grey += mode is None
        for key, value in zip(cols, (v, f + offset, np.full(len(f), FACE if mode is None else mode, np.int8),
                                     frgb, vrgb, uv, np.full(len(f), tex, np.int32))):  # fmt: skip
            cols[key].append(value)
        offset += len(v)
    mesh = MeshData(path, *(np.concatenate(cols[k]) for k in cols), textures=textures, grey_parts=grey)
    bad = ~np.isfinite(mesh.vertices_V3).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} vertices have NaN/inf coordinates")
    if grey:
        warnings.warn(f"{path}: {grey} mesh part(s) have no vertex colours and no texture; rendered grey",
                      stacklevel=2)  # fmt: skip
    return mesh
