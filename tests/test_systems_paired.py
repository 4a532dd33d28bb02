"""Image-to-image systems in the audit, and paired (counterfactual) effects."""

import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import textured_image
from fairbits.audit.plan import plan_audit
from fairbits.audit.runner import run_audit
from fairbits.audit.store import load_results
from fairbits.bias.paired import paired_effect, paired_table
from fairbits.codecs.base import get_codec
from fairbits.codecs.systems import resample_bicubic
from fairbits.errors import SpecError
from fairbits.spec import parse_spec


def test_resample_bicubic_matches_pillow_and_has_no_rate():
    img = textured_image(np.random.default_rng(0), (48, 64))
    coded = get_codec("resample-bicubic").code(img, 4)
    small = Image.fromarray(img).resize((16, 12), Image.Resampling.BOX)
    np.testing.assert_array_equal(coded.recon, np.asarray(small.resize((64, 48), Image.Resampling.BICUBIC)))
    assert np.isnan(coded.bpp) and np.isnan(coded.num_bytes)
    assert resample_bicubic(img, 2).shape == img.shape


@pytest.fixture
def entry_module(tmp_path, monkeypatch):
    (tmp_path / "fb_test_systems.py").write_text(
        "import numpy as np\n"
        "def darken(image):\n    return image.astype(float) / 255 * 0.8\n"
        "def crop(image):\n    return image[1:]\n"
        "not_callable = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fb_test_systems"
    sys.modules.pop("fb_test_systems", None)


def _spec(csv, codecs, measures=("psnr",)):
    return parse_spec({"dataset": {"reader": "csv", "path": str(csv), "path_column": "path"},
                       "groups": ["grp"], "codecs": codecs, "measures": list(measures),
                       "n_boot": 100, "n_perm": 100})


def test_user_system_from_an_entry_point(csv_dataset, entry_module, tmp_path):
    spec = _spec(csv_dataset, [{"name": "dark", "entry": f"{entry_module}:darken"},
                               {"name": "resample-bicubic", "quality": [2]}])
    run_audit(spec, tmp_path / "run", progress=False)
    r = load_results(tmp_path / "run")
    assert set(zip(r.codec, r.setting)) == {("dark", "q1"), ("resample-bicubic", "q2")}
    assert r.bpp.isna().all() and r.error.isna().all()
    dark = r[r.codec == "dark"]
    assert (dark.psnr < 30).all()  # 20% darker everywhere is a visible change
    assert (tmp_path / "run" / "report.html").is_file()


@pytest.mark.parametrize("codec, message", [
    ({"name": "x", "entry": "no_colon"}, "package.module:function"),
    ({"name": "x", "entry": "fb_no_such_module:f"}, "cannot import"),
    ({"name": "x", "entry": "fb_test_systems:missing"}, "no attribute"),
    ({"name": "x", "entry": "fb_test_systems:not_callable"}, "not callable"),
    ({"name": "resample-bicubic", "target_bpp": [0.1]}, "no bit rate"),
])
def test_bad_systems_stop_at_planning(csv_dataset, entry_module, codec, message):
    with pytest.raises(SpecError, match=message):
        plan_audit(_spec(csv_dataset, [codec]))


def test_a_system_that_changes_the_shape_of_every_image_stops_the_run(csv_dataset, entry_module, tmp_path):
    from fairbits.errors import FairbitsError

    with pytest.raises(FairbitsError, match="all .* failed .*returned shape"):
        run_audit(_spec(csv_dataset, [{"name": "crop", "entry": f"{entry_module}:crop"}]), tmp_path / "r",
                  progress=False, report=False)
    assert not list((tmp_path / "r").glob("cells/*/part-*.parquet"))  # nothing stored as data


# --------------------------------------------------------------------------- paired effects
def test_paired_effect_arithmetic():
    rng = np.random.default_rng(0)
    diffs = 1.0 + rng.normal(0, 0.1, 50)
    mean, lo, hi, p = paired_effect(diffs, n_boot=500, n_perm=500, rng=rng)
    assert mean == pytest.approx(diffs.mean()) and lo < mean < hi and p < 0.01
    null = rng.normal(0, 1, 50)
    assert paired_effect(null, n_boot=200, n_perm=500, rng=rng)[3] > 0.05


def test_paired_table_pairs_by_pair_id():
    rows = []
    for k in range(10):
        rows += [{"codec": "c", "setting": "s", "pair_id": k, "tone": "dark", "psnr": 30.0 + k, "error": None},
                 {"codec": "c", "setting": "s", "pair_id": k, "tone": "light", "psnr": 32.0 + k, "error": None}]
    rows.append({"codec": "c", "setting": "s", "pair_id": 99, "tone": "light", "psnr": 0.0, "error": None})
    t = paired_table(pd.DataFrame(rows), ["tone"], ["psnr"], n_boot=100, n_perm=100)
    assert len(t) == 1
    row = t.iloc[0]
    assert (row.group_a, row.group_b, row.n_pairs) == ("dark", "light", 10)  # the unpaired image is left out
    assert row.effect == pytest.approx(2.0) and row.ci_low == pytest.approx(2.0)
    assert paired_table(pd.DataFrame(rows).drop(columns="pair_id"), ["tone"], ["psnr"]).empty


def test_counterfactual_pairs_through_the_audit(tmp_path):
    """Pairs of one texture, plain and with added grain: JPEG loses more PSNR on the grainy side."""
    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    rows = []
    for k in range(8):
        base = textured_image(rng, (48, 48))
        grainy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        for side, im in (("plain", base), ("grainy", grainy)):
            Image.fromarray(im).save(tmp_path / "img" / f"{k}_{side}.png")
            rows.append({"path": f"img/{k}_{side}.png", "grp": side, "pair_id": k})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    out = run_audit(_spec(tmp_path / "labels.csv", [{"name": "jpeg", "quality": [30]}]), tmp_path / "run",
                    progress=False)
    paired = pd.read_csv(out / "paired.csv")
    psnr = paired[paired.measure == "psnr"].iloc[0]
    assert (psnr.group_a, psnr.group_b, psnr.n_pairs) == ("grainy", "plain", 8)
    assert psnr.effect > 0 and psnr.ci_low > 0  # plain − grainy: the plain side keeps more PSNR
    assert 'id="paired"' in (out / "report.html").read_text()
