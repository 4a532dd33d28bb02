"""Bad specs stop before any work, with a message naming the problem and exit status 2."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from fairbits.audit.plan import plan_audit
from fairbits.cli import app
from fairbits.errors import FairbitsError, SpecError
from fairbits.spec import load_spec, parse_spec

from conftest import ISSUE_SPEC, write_csv_dataset


def _with(csv, **changes):
    spec = yaml.safe_load(ISSUE_SPEC)
    spec["dataset"]["path"] = str(csv)
    spec.update(changes)
    return spec


@pytest.mark.parametrize("change,message", [
    ({"codecs": [{"name": "jpegg", "quality": [10]}]}, "unknown codec 'jpegg'"),
    ({"measures": ["psnr", "lpips9"]}, "unknown measure 'lpips9'"),
    ({"groups": ["race"]}, "group column 'race' is not in the dataset"),
    ({"groups": {"grp": ["a", "zzz"]}}, "'zzz' of column 'grp' have no images"),
    ({"codecs": [{"name": "jpeg", "quality": [500]}]}, "outside its settings"),
    ({"codecs": [{"name": "jpeg"}]}, "give `quality"),
    ({"colour": "red"}, "colour: unknown key"),
])
def test_bad_spec_is_refused_before_work(csv_dataset, tmp_path, change, message):
    with pytest.raises(FairbitsError, match=message.replace("(", r"\(")):
        plan_audit(parse_spec(_with(csv_dataset, **change)))


def test_missing_dataset_path(tmp_path):
    with pytest.raises(SpecError, match="dataset path not found"):
        plan_audit(parse_spec(_with(tmp_path / "nowhere.csv")))


def test_cli_exit_status_2_and_no_work(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=1)
    bad = _with(csv, codecs=[{"name": "nosuchcodec", "quality": [1]}])
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    result = CliRunner().invoke(app, ["audit", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "unknown codec 'nosuchcodec'" in result.output
    assert not (tmp_path / "run").exists()


def test_spec_paths_are_relative_to_the_spec(tmp_path):
    csv = write_csv_dataset(tmp_path / "d", n_per_group=1)
    (csv.parent / "s.yaml").write_text(ISSUE_SPEC)
    assert load_spec(csv.parent / "s.yaml").dataset.path == csv.resolve()
    (tmp_path / "broken.yaml").write_text("dataset: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(tmp_path / "broken.yaml")
