"""`panowan demo` end to end on a minimal setting (one room, two steps)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_demo_writes_report(tmp_path, monkeypatch):
    from panowan.cli import main
    from panowan.commands import infer as infer_cmd

    monkeypatch.setattr(infer_cmd, "ASSETS", tmp_path / "no_assets")  # no embedded model: must warn
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--rooms", "1", "--steps", "2", "--baselines", "copy", "harmonic"])
    assert rc == 0
    html = (out / "report.html").read_text()
    assert "UNTRAINED" in html and "room.ply" in html and "best classical fill" in html
    res = json.loads((out / "metrics.json").read_text())
    assert set(res) == {"model", "copy", "harmonic"}
    assert res["model"]["best_classical"]["hole_psnr"]["method"] == "harmonic"  # the only classical fill
    assert res["copy"]["mean"]["hole"]["absrel"] == pytest.approx(1.0)
    assert (out / "completions" / "area_000" / "room_0000" / "room.ply").is_file()
