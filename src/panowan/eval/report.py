"""`report.html`: what a completion looks like and how good it is, in one self-contained page.

Per room and view, side by side: the input (view 0 reprojected, holes black), the model's completion, the
ground truth, and the depth of both (colour-mapped inverse depth, one scale per view). Then the metrics
table (model vs baselines, from `metrics.evaluate_dir` results) and a link to each room's `room.ply`.
Images are embedded as base64 PNG thumbnails, so the page can be moved or mailed; links to point clouds
are relative to the page. A small script marks `<body data-images="ok">` once every image has decoded
(a headless browser test reads it).
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from panowan.eval.summary import TABLE_COLUMNS, table_cells, table_rows

THUMB_WIDTH = 256

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
td, th { border: 1px solid #ccc; padding: 3px 6px; text-align: center; font-size: 13px; }
img { display: block; image-rendering: pixelated; }
.warn { background: #fff3cd; border: 1px solid #e0b000; padding: 0.6em; }
"""

_CHECK = """
<script>
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length;
  document.body.dataset.images = broken === 0 && imgs.length > 0 ? 'ok' : 'broken:' + broken;
  document.body.dataset.imageCount = String(imgs.length);
});
</script>
"""


def png_data_uri(image: np.ndarray, width: int = THUMB_WIDTH) -> str:
    """RGB `H x W x 3` uint8 -> a `data:image/png;base64,...` thumbnail `width` wide (nearest-neighbour)."""
    import cv2

    h, w = image.shape[:2]
    if w != width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    assert ok, "PNG encoding failed"
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _img(image: np.ndarray, alt: str) -> str:
    return f'<img src="{png_data_uri(image)}" alt="{html.escape(alt)}" width="{THUMB_WIDTH}">'


def metrics_html(methods: Mapping[str, dict]) -> str:
    """The metrics table as HTML: one row per (room, method), then the means."""
    head = "".join(f"<th>{html.escape(c[2])}</th>" for c in TABLE_COLUMNS)
    rows = [f"<tr><th>room</th><th>method</th>{head}</tr>"]

    def row(room: str, method: str, groups: dict, bold: bool = False) -> str:
        cells = "".join(f"<td>{c}</td>" for c in table_cells(groups))
        name = f"<b>{html.escape(room)}</b>" if bold else html.escape(room)
        return f"<tr><td>{name}</td><td>{html.escape(method)}</td>{cells}</tr>"

    for room, method, groups in table_rows(methods):
        rows.append(row(room or "mean", method, groups, bold=room is None))
    return "<table>" + "".join(rows) + "</table>"


def _room_images(data_room: Path, pred_room: Path, views: list[int]) -> list[tuple[int, list[str]]]:
    from panowan.data.io import read_depth, read_rgb
    from panowan.data.layout import RoomPaths
    from panowan.sample.pipeline import depth_to_color

    paths = RoomPaths(data_room)
    out = []
    for v in views:
        cond = read_rgb(paths.ref_rgb if v == 0 else paths.cond_rgb(v))
        pred = read_rgb(pred_room / f"panorama_{v:04d}.png")
        gt = read_rgb(paths.gt_rgb(v))
        pred_depth = read_depth(pred_room / f"panorama_{v:04d}_depth.npy")
        gt_depth = read_depth(paths.gt_depth(v))
        cells = [_img(cond, f"input {v}"), _img(pred, f"completion {v}"), _img(gt, f"ground truth {v}"),
                 _img(depth_to_color(pred_depth), f"completed depth {v}"),
                 _img(depth_to_color(gt_depth), f"true depth {v}")]  # fmt: skip
        out.append((v, cells))
    return out


def write_report(
    out_html: str | os.PathLike,
    data_root: str | os.PathLike,
    pred_dir: str | os.PathLike,
    results: Mapping[str, dict],
    *,
    title: str = "panowan completions",
    notes: list[str] | None = None,
    warnings_: list[str] | None = None,
) -> Path:
    """Write the report for the rooms of `results['model']` (views as predicted in `pred_dir`)."""
    from panowan.eval.metrics import predicted_views
    from panowan.eval.summary import verdict_lines
    from panowan.utils.atomic import atomic_write_text

    out_html, data_root, pred_dir = Path(out_html), Path(data_root), Path(pred_dir)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style>{_CHECK}</head><body>", f"<h1>{html.escape(title)}</h1>"]  # fmt: skip
    for w in warnings_ or []:
        parts.append(f"<p class='warn'><b>Warning:</b> {html.escape(w)}</p>")
    for n in notes or []:
        parts.append(f"<p>{html.escape(n)}</p>")
    verdict = verdict_lines(results)
    if verdict:
        parts.append("<h2>Model against the best classical fill, per metric</h2><ul>"
                     + "".join(f"<li>{html.escape(line)}</li>" for line in verdict) + "</ul>")  # fmt: skip
    parts.append("<h2>Metrics</h2>" + metrics_html(results))
    parts.append("<p>hole = pixels not visible from view 0 (what the model must invent); known = pixels copied "
                 "from the input. PSNR/SSIM on RGB in [0, 1]; AbsRel, RMSE (m) and δ<1.25 on metric depth; "
                 "x-view AbsRel: depth disagreement between views reprojected into each other; hole x-view L1 / PSNR / "
                 "depth err: the same between two views' completions where both had to fill the surface (holes of "
                 "both that the ground truth says both see); seam ratio: "
                 "|left − right edge| over ordinary neighbouring columns (1 = seamless).</p>")  # fmt: skip
    for room_id in sorted(results["model"]["rooms"]):
        pred_room = pred_dir / room_id
        views = predicted_views(pred_room)
        ply = pred_room / "room.ply"
        link = os.path.relpath(ply, out_html.parent)
        parts.append(f"<h2>{html.escape(room_id)}</h2>")
        parts.append(f"<p>Fused point cloud of all completed views (view 0's frame): "
                     f"<a href='{html.escape(link)}'>{html.escape(link)}</a></p>")  # fmt: skip
        parts.append("<table><tr><th>view</th><th>input</th><th>completion</th><th>ground truth</th>"
                     "<th>completed depth</th><th>true depth</th></tr>")  # fmt: skip
        for v, cells in _room_images(data_root / room_id, pred_room, views):
            parts.append(f"<tr><td>{v}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return atomic_write_text(out_html, "\n".join(parts))
