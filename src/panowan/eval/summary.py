"""Summaries of `metrics.evaluate_dir` results of several methods ({method: result}, the model as "model"):
the table columns and rows (markdown here, HTML in `report`), and the model against the best classical fill
per headline metric (`best_classical`: the JSON block; `verdict_lines`: the same as sentences)."""

from __future__ import annotations

from collections.abc import Iterator

from panowan.eval.baselines import CLASSICAL_FILLS

TABLE_COLUMNS = (
    ("hole", "psnr", "hole PSNR"), ("hole", "ws_psnr", "hole WS-PSNR"), ("hole", "ssim", "hole SSIM"),
    ("hole", "absrel", "hole AbsRel"), ("hole", "rmse", "hole RMSE m"), ("hole", "delta1", "hole δ<1.25"),
    ("known", "psnr", "known PSNR"), ("known", "absrel", "known AbsRel"),
    ("consistency", "depth_absrel", "x-view AbsRel"),
    ("hole_consistency", "rgb_l1", "hole x-view L1"), ("hole_consistency", "psnr", "hole x-view PSNR"),
    ("hole_consistency", "depth_rel", "hole x-view depth err"),
    ("seam", "rgb_ratio", "seam ratio RGB"),
)  # fmt: skip
"""(group, key, header) of the table's metric columns."""

ROOM_GROUPS = ("consistency", "hole_consistency")
"""Groups computed per room (not per view): a room's row takes them from the room's result."""

INPAINTING_BASELINES = CLASSICAL_FILLS
VERDICT_METRICS = (
    ("hole", "psnr", "hole PSNR (dB)", True), ("hole", "ssim", "hole SSIM", True),
    ("hole", "absrel", "hole depth AbsRel", False),
    ("hole_consistency", "rgb_l1", "hole cross-view RGB L1", False),
    ("hole_consistency", "depth_rel", "hole cross-view depth error", False),
)  # fmt: skip
"""(group, key, label, higher is better) of the headline comparison."""


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def table_rows(methods: dict) -> Iterator[tuple[str | None, str, dict]]:
    """(room, method, {group: {key: value}}) in table order: every room's methods, then each method's mean
    (room None). Shared by the markdown table and the HTML report so both list the same rows."""
    rooms = sorted({r for res in methods.values() for r in res["rooms"]})
    for room in rooms:
        for method, res in methods.items():
            if room in res["rooms"]:
                r = res["rooms"][room]
                yield room, method, {**r["mean"], **{g: r[g] for g in ROOM_GROUPS if g in r}}
    for method, res in methods.items():
        yield None, method, res["mean"]


def table_cells(groups: dict) -> list[str]:
    """The formatted metric cells of one row, in `TABLE_COLUMNS` order."""
    return [_fmt(groups.get(g, {}).get(k)) for g, k, _ in TABLE_COLUMNS]


def best_classical(methods: dict[str, dict]) -> dict[str, dict]:
    """The model's room-averaged mean against the best classical fill (`CLASSICAL_FILLS` among `methods`), per
    headline metric (`VERDICT_METRICS`), keyed "{group}_{key}" (e.g. "hole_psnr"):

    {"method": the best fill, "value": its mean, "model": the model's, "higher_is_better": bool,
     "margin": how far the model is ahead (model - best if higher is better, best - model if lower: > 0 means
     the model is better), "better": margin > 0, and for lower-is-better metrics "ratio": model / best}.

    A metric that the model or every fill lacks is left out; {} without the model or without a fill. The copied
    input is no contender: it leaves the holes empty."""
    rivals = [m for m in INPAINTING_BASELINES if m in methods]
    if "model" not in methods or not rivals:
        return {}
    out = {}
    for group, key, _, higher in VERDICT_METRICS:
        ours = methods["model"]["mean"].get(group, {}).get(key)
        scores = {m: methods[m]["mean"].get(group, {}).get(key) for m in rivals}
        scores = {m: v for m, v in scores.items() if v is not None}
        if ours is None or not scores:
            continue
        best = (max if higher else min)(scores, key=scores.__getitem__)
        margin = ours - scores[best] if higher else scores[best] - ours
        entry = {"method": best, "value": scores[best], "model": ours, "higher_is_better": higher,
                 "margin": margin, "better": margin > 0}  # fmt: skip
        if not higher:
            entry["ratio"] = ours / scores[best] if scores[best] else None
        out[f"{group}_{key}"] = entry
    return out


def verdict_lines(methods: dict[str, dict]) -> list[str]:
    """`best_classical` as one sentence per headline metric: the model's mean, the best classical fill's (named)
    and the margin (none without a fill)."""
    labels = {f"{g}_{k}": label for g, k, label, _ in VERDICT_METRICS}
    lines = []
    for name, b in best_classical(methods).items():
        margin = b["margin"]
        verdict = (
            f"{'better' if margin > 0 else 'worse'} by {_fmt(abs(margin))}" if margin else "level with it"
        )
        ratio = f" (model / best = {_fmt(b['ratio'])})" if b.get("ratio") is not None else ""
        lines.append(f"{labels[name]}: model {_fmt(b['model'])}, best classical fill {_fmt(b['value'])} "
                     f"({b['method']}): the model is {verdict}{ratio}")  # fmt: skip
    return lines


def markdown_table(methods: dict[str, dict]) -> str:
    """A markdown table: one row per (room, method) and per method's mean, from `evaluate_dir` results, then the
    model against the best classical fill per headline metric (`verdict_lines`)."""
    header = "| room | method | " + " | ".join(c[2] for c in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(TABLE_COLUMNS) + 2)]
    for room, method, groups in table_rows(methods):
        name = "**mean**" if room is None else room
        lines.append(f"| {name} | {method} | " + " | ".join(table_cells(groups)) + " |")
    verdict = verdict_lines(methods)
    if verdict:
        lines += ["", *(f"- {line}" for line in verdict)]
    return "\n".join(lines) + "\n"
