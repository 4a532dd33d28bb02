"""Tests of the HTML report: sections, embedded figures, PNG files, escaping."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fairbits.report.html import Section, render_report

EVIL = "<script>alert(1)</script>"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def synthetic_run(run_dir, n_images: int = 48, seed: int = 0):
    """A run directory's tables: results with a group effect, errors, an evil group name."""
    rng = np.random.default_rng(seed)
    ids = [f"img{i:03d}" for i in range(n_images)]
    skin = np.array([["light", "medium", EVIL][i % 3] for i in range(n_images)])
    gender = rng.choice(["f", "m"], n_images)
    manifest = pd.DataFrame({"image_id": ids, "path": [f"/data/{i}.png" for i in ids], "skin_group": skin,
                             "gender": gender, "checksum": "x"})
    frames, cells = [], []
    for codec in ("jpeg", "webp"):
        for t in (0.1, 0.25, 0.5):
            setting = f"bpp{t}"
            cells.append({"id": f"{codec}__{setting}", "codec": codec, "setting": setting, "target_bpp": t})
            psnr = 24 + 12 * t - 2.0 * (skin == EVIL) + rng.normal(0, 0.7, n_images)
            frames.append(pd.DataFrame({
                "image_id": ids, "codec": codec, "setting": setting, "target_bpp": t, "quality": np.nan,
                "bpp": t + rng.normal(0, 0.01, n_images), "psnr": psnr, "ssim": 1 - 2 / psnr,
                "ciede2000": 60 / psnr, "error": None, "skin_group": skin, "gender": gender}))
    results = pd.concat(frames, ignore_index=True)
    bad = results.index[:3]
    results.loc[bad, "error"] = ["decode <failed> & co", "decode <failed> & co", "timeout"]
    results.loc[bad, ["psnr", "ssim", "ciede2000"]] = np.nan
    info = {"name": "synthetic <run>", "created": "2025-01-01T00:00:00+00:00", "dataset": "/data/faces.csv",
            "groups": ["skin_group", "gender"], "measures": ["psnr", "ssim", "ciede2000"], "seed": 0,
            "n_boot": 200, "n_perm": 200, "cells": cells}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(info))
    if _parquet_ok():
        manifest.to_parquet(run_dir / "manifest.parquet")
    return results, manifest, info


def _parquet_ok() -> bool:
    """Whether pandas can write Parquet here (pyarrow importable)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    results, manifest, info = synthetic_run(run_dir)
    extra = Section("Phenotype measures", "<p>later</p>", "phenotype")
    path = render_report(run_dir, results, manifest, info, extra_sections=[extra])
    return run_dir, path, path.read_text(encoding="utf-8")


def test_report_written_with_sections(report):
    run_dir, path, text = report
    assert path == run_dir / "report.html"
    for title in ("Dataset composition and errors", "Rate–distortion curves per group", "Gap versus bit rate",
                  "Largest significant gaps", "How to read this report", "Phenotype measures"):
        assert f"<h2>{title}</h2>" in text
    assert "<details>" in text and "Full bias table" in text
    assert "jpeg" in text and "bpp0.25" in text
    assert all((run_dir / f"{n}.csv").is_file() for n in ("summary", "bias", "pairwise"))


def test_figures_embedded_and_written(report):
    run_dir, _, text = report
    # composition + rate-distortion (3 measures x 2 attributes) + a gap figure per measure;
    # bpp is descriptive (the rate each group gets), so it has no gap figure
    assert text.count('<img src="data:image/png;base64,') >= 1 + 3 * 2 + 3
    pngs = sorted((run_dir / "figures").glob("*.png"))
    assert len(pngs) >= 10 and not (run_dir / "figures" / "gap_bpp.png").exists()
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC
    assert "http://" not in text.replace("http://www.w3.org", "") and "<script" not in text


def test_user_strings_are_escaped(report):
    _, _, text = report
    assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "decode &lt;failed&gt; &amp; co" in text
    assert "synthetic &lt;run&gt;" in text


def test_significant_gap_found(report):
    _, _, text = report
    section = text.split("<h2>Largest significant gaps</h2>", 1)[1].split("<details>", 1)[0]
    assert "No significant gap" not in section
    assert "&lt;script&gt;" in section  # the shifted group is the worst one


def test_write_report_reads_run_dir(tmp_path, monkeypatch):
    import sys
    import types

    from fairbits.report import html as report_html

    results, _, _ = synthetic_run(tmp_path, n_images=24)
    fake = types.ModuleType("fairbits.audit.store")
    fake.load_results = lambda run_dir: results
    monkeypatch.setitem(sys.modules, "fairbits.audit.store", fake)
    path = report_html.write_report(tmp_path)
    assert path.is_file() and (tmp_path / "bias.csv").is_file()
    assert "&lt;script&gt;" in path.read_text(encoding="utf-8")


def test_headline_is_findings_and_descriptions_are_not_ranked(tmp_path):
    """The planted table of test_findings: the headline lists degradations and drifts with
    q < 0.05 from findings.csv, psnr first; ita_orig (descriptive) only in its own section."""
    from test_findings import MEASURES, planted

    from fairbits.bias.findings import read_findings

    results = planted()
    info = {"name": "planted", "groups": ["skin"], "measures": MEASURES, "seed": 0, "n_boot": 100, "n_perm": 199,
            "cells": []}
    (tmp_path / "run.json").write_text(json.dumps(info))
    text = render_report(tmp_path, results, pd.DataFrame(), info).read_text(encoding="utf-8")
    findings = read_findings(tmp_path)
    assert findings is not None and findings.iloc[0].measure == "psnr"
    headline = text.split("<h2>Largest significant gaps</h2>", 1)[1].split("<details>", 1)[0]
    rows = headline.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr>")[1:]
    assert len(rows) == int(findings.significant.sum()) >= 12
    assert rows[0].startswith("<td>psnr</td><td>degradation</td>")
    assert "ita_orig" not in headline and "delta_ita" in headline and "dark (" in headline
    assert "Benjamini–Hochberg" in headline
    descriptive = text.split("<h2>Dataset and reconstructions</h2>", 1)[1].split("</section>", 1)[0]
    assert "ita_orig" in descriptive and "(originals)" in descriptive
    assert "q &lt; 0.05" in text.split("<h2>How to read this report</h2>", 1)[1]


def test_descriptive_column_without_rows_is_skipped(tmp_path):
    from test_findings import MEASURES, planted

    results = planted(cells=(("jpeg", "q10"),)).assign(ita_orig=np.nan)  # e.g. no face found anywhere
    info = {"name": "no faces", "groups": ["skin"], "measures": MEASURES, "seed": 0, "n_boot": 100,
            "n_perm": 100, "cells": []}
    (tmp_path / "run.json").write_text(json.dumps(info))
    text = render_report(tmp_path, results, pd.DataFrame(), info).read_text(encoding="utf-8")
    descriptive = text.split("<h2>Dataset and reconstructions</h2>", 1)[1].split("</section>", 1)[0]
    assert "ita_orig" not in descriptive and "bpp" in descriptive
