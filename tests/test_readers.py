"""Dataset readers and manifests, on tiny datasets written into tmp_path."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from published_layouts import (FAIRFACE_FOLDERS, random_published_rows, write_celeba, write_fairface, write_rfw,
                               write_rfw_landmarks, write_rfw_metadata, write_utkface)
from published_layouts import image as _image

from fairbits.data.manifest import MANIFEST_COLUMNS, build_manifest, read_manifest_file, write_manifest
from fairbits.data.readers import (
    LANDMARK_COLUMNS,
    PHENOTYPE_COLUMNS,
    READERS,
    normalise_phenotype_columns,
    parse_utkface_name,
    read_celeba,
    read_csv,
    read_fairface,
    read_folder,
    read_rfw,
    read_utkface,
)
from fairbits.errors import DatasetError


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- csv


@pytest.fixture
def csv_dataset(tmp_path: Path) -> Path:
    """root/labels.csv with 6 images: 4 group a (2 f, 2 m), 2 group b (1 f, 1 m)."""
    rows = []
    specs = [("a", "f"), ("a", "f"), ("a", "m"), ("a", "m"), ("b", "f"), ("b", "m")]
    for i, (g, s) in enumerate(specs):
        _image(tmp_path / "img" / f"{i}.png", i)
        rows.append({"path": f"img/{i}.png", "group": g, "sex": s, "split": "test" if i % 2 else "train"})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "labels.csv"


def test_csv_reads_labels_and_resolves_paths(csv_dataset: Path):
    df = read_csv(csv_dataset)
    assert list(df.columns) == ["image_id", "path", "group", "sex", "split"]
    assert df["image_id"].tolist() == [f"img/{i}" for i in range(6)]
    root = csv_dataset.parent.resolve()
    assert all(Path(p).is_absolute() and Path(p).parent == root / "img" for p in df["path"])
    assert df["group"].tolist() == ["a", "a", "a", "a", "b", "b"]


def test_csv_id_column_and_split(tmp_path: Path):
    _image(tmp_path / "x.png")
    _image(tmp_path / "y.png", 9)
    pd.DataFrame({"file": ["x.png", "y.png"], "name": ["X", "Y"], "split": ["val", "test"],
                  "race": ["r1", "r2"]}).to_csv(tmp_path / "l.csv", index=False)
    df = read_csv(tmp_path / "l.csv", path_column="file", id_column="name", split="test")
    assert df["image_id"].tolist() == ["Y"]
    assert "file" not in df.columns and "name" not in df.columns
    assert df["race"].tolist() == ["r2"]


def test_csv_explicit_root(tmp_path: Path):
    _image(tmp_path / "data" / "p.png")
    (tmp_path / "labels").mkdir()
    pd.DataFrame({"path": ["p.png"], "g": [1]}).to_csv(tmp_path / "labels" / "l.csv", index=False)
    df = read_csv(tmp_path / "labels" / "l.csv", root="../data")
    assert df["path"].tolist() == [str((tmp_path / "data" / "p.png").resolve())]


@pytest.mark.parametrize("bad", ["../outside.png", "img/../../outside.png", "ABS"])
def test_csv_rejects_paths_escaping_root(tmp_path: Path, bad: str):
    root = tmp_path / "root"
    outside = _image(tmp_path / "outside.png")
    _image(root / "img" / "ok.png")
    entry = str(outside) if bad == "ABS" else bad
    pd.DataFrame({"path": ["img/ok.png", entry], "g": [1, 2]}).to_csv(root / "l.csv", index=False)
    with pytest.raises(DatasetError, match="outside the dataset root") as err:
        read_csv(root / "l.csv")
    assert entry in str(err.value)


def test_csv_rejects_symlink_escaping_root(tmp_path: Path):
    root = tmp_path / "root"
    outside = _image(tmp_path / "secret.png")
    root.mkdir()
    os.symlink(outside, root / "link.png")
    pd.DataFrame({"path": ["link.png"], "g": [1]}).to_csv(root / "l.csv", index=False)
    with pytest.raises(DatasetError, match="link.png"):
        read_csv(root / "l.csv")


def test_csv_absolute_path_inside_root_is_accepted(tmp_path: Path):
    img = _image(tmp_path / "sub" / "in.png")
    pd.DataFrame({"path": [str(img)], "g": [1]}).to_csv(tmp_path / "l.csv", index=False)
    df = read_csv(tmp_path / "l.csv")
    assert df["image_id"].tolist() == ["sub/in"]


def test_csv_missing_column_and_split_column(csv_dataset: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match="nope"):
        read_csv(csv_dataset, path_column="nope")
    pd.DataFrame({"path": ["a.png"]}).to_csv(tmp_path / "nosplit.csv", index=False)
    with pytest.raises(DatasetError, match="split"):
        read_csv(tmp_path / "nosplit.csv", split="test")


# ---------------------------------------------------------------- folder


def test_folder_groups_and_suffixes(tmp_path: Path):
    _image(tmp_path / "women" / "1.jpg")
    _image(tmp_path / "women" / "2.PNG")
    _image(tmp_path / "men" / "3.JPEG")
    _image(tmp_path / "men" / "4.webp")
    (tmp_path / "men" / "notes.txt").write_text("not an image")
    _image(tmp_path / "top_level.png")
    df = read_folder(tmp_path, group_column="sex")
    assert list(df.columns) == ["image_id", "path", "sex"]
    assert sorted(df["image_id"]) == ["men/3", "men/4", "women/1", "women/2"]
    assert dict(zip(df["image_id"], df["sex"]))["men/4"] == "men"


def test_folder_rejects_symlinked_dir_outside(tmp_path: Path):
    _image(tmp_path / "elsewhere" / "x.png")
    (tmp_path / "root").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "root" / "g")
    with pytest.raises(DatasetError, match="outside"):
        read_folder(tmp_path / "root")


# ---------------------------------------------------------------- fairface


@pytest.fixture
def fairface_root(tmp_path: Path) -> Path:
    for split, n in (("train", 3), ("val", 2)):
        rows = []
        for i in range(1, n + 1):
            _image(tmp_path / split / f"{i}.jpg", i)
            rows.append({"file": f"{split}/{i}.jpg", "age": "20-29" if i % 2 else "3-9",
                         "gender": "Male" if i % 2 else "Female", "race": "East Asian",
                         "service_test": bool(i % 2)})
        pd.DataFrame(rows).to_csv(tmp_path / f"fairface_label_{split}.csv", index=False)
    return tmp_path


def test_fairface_splits(fairface_root: Path):
    val = read_fairface(fairface_root)
    assert val["image_id"].tolist() == ["val/1", "val/2"]
    assert val["age"].tolist() == ["20-29", "3-9"]
    assert set(val["split"]) == {"val"}
    train = read_fairface(fairface_root, split="train")
    assert len(train) == 3 and train["gender"].tolist() == ["Male", "Female", "Male"]
    assert all(Path(p).is_file() for p in train["path"])
    with pytest.raises(DatasetError, match="split"):
        read_fairface(fairface_root, split="test")


def test_fairface_missing_label_file(tmp_path: Path):
    with pytest.raises(DatasetError, match="fairface_label_val.csv"):
        read_fairface(tmp_path)


# ---------------------------------------------------------------- utkface


def test_utkface_parses_and_skips(tmp_path: Path):
    good = ["25_0_2_20170116174525125.jpg.chip.jpg", "3_1_4_20161219140623097.jpg", "80_1_0_20170110.jpg"]
    bad = ["39_1_20170116174525125.jpg.chip.jpg", "x_0_1_2017.jpg", "20_2_1_2017.jpg", "20_0_7_2017.jpg"]
    for i, name in enumerate(good + bad):
        _image(tmp_path / name, i)
    (tmp_path / "readme.txt").write_text("ignored")
    with pytest.warns(UserWarning, match="skipped 4"):
        df = read_utkface(tmp_path)
    assert len(df) == 3
    by_id = df.set_index("image_id")
    assert by_id.loc["25_0_2_20170116174525125", ["age", "gender", "race"]].tolist() == [25, "male", "Asian"]
    assert by_id.loc["3_1_4_20161219140623097", "race"] == "Others"
    assert by_id.loc["80_1_0_20170110", "gender"] == "female"
    assert df["age"].dtype == np.int64
    skipped = dict(df.attrs["skipped"])
    assert set(skipped) == set(bad)
    assert "4 fields" in skipped["39_1_20170116174525125.jpg.chip.jpg"]
    assert "gender" in skipped["20_2_1_2017.jpg"] and "race" in skipped["20_0_7_2017.jpg"]


def test_utkface_name_parser():
    assert parse_utkface_name("1_1_1_1.jpg") == (1, "female", "Black")
    with pytest.raises(ValueError):
        parse_utkface_name("1_1_1.jpg")


def test_utkface_no_warning_when_all_valid(tmp_path: Path):
    _image(tmp_path / "30_0_3_20170101.jpg")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = read_utkface(tmp_path)
    assert df.attrs["skipped"] == [] and df["race"].tolist() == ["Indian"]


# ---------------------------------------------------------------- celeba

CELEBA_ATTRS = ["5_o_Clock_Shadow", "Male", "Young"] + [f"Attr_{i}" for i in range(37)]


def _write_celeba(root: Path, values: list[list[int]], parts: list[int]) -> Path:
    names = [f"{i + 1:06d}.jpg" for i in range(len(values))]
    for i, n in enumerate(names):
        _image(root / "img_align_celeba" / n, i)
    lines = [str(len(names)), " ".join(CELEBA_ATTRS)]
    lines += [n + "  " + " ".join(f"{v:2d}" for v in row) for n, row in zip(names, values)]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, parts)))
    return root


@pytest.fixture
def celeba_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    values = rng.choice([-1, 1], size=(5, 40)).tolist()
    values[0][1], values[3][1] = 1, -1  # Male of image 1 and 4
    return _write_celeba(tmp_path, values, [0, 0, 1, 2, 2])


def test_celeba_attributes_and_partitions(celeba_root: Path):
    test = read_celeba(celeba_root)
    assert test["image_id"].tolist() == ["000004", "000005"]
    assert test["Male"].dtype == bool and not bool(test["Male"].iloc[0])
    assert list(test.columns[:3]) == ["image_id", "path", "split"] and len(test.columns) == 43
    every = read_celeba(celeba_root, split="all")
    assert every["split"].tolist() == ["train", "train", "val", "test", "test"]
    assert bool(every["Male"].iloc[0])
    raw = [line.split() for line in (celeba_root / "list_attr_celeba.txt").read_text().splitlines()[2:]]
    expected = np.array([[int(v) == 1 for v in r[1:]] for r in raw])
    assert (every[CELEBA_ATTRS].to_numpy() == expected).all()
    assert read_celeba(celeba_root, split="val")["image_id"].tolist() == ["000003"]
    with pytest.raises(DatasetError, match="split"):
        read_celeba(celeba_root, split="dev")


def test_celeba_bad_value_and_count(tmp_path: Path):
    root = _write_celeba(tmp_path, [[1] * 39 + [0]], [0])
    with pytest.raises(DatasetError, match="1 and -1"):
        read_celeba(root, split="all")
    text = (root / "list_attr_celeba.txt").read_text().replace(" 0\n", " 1\n")
    (root / "list_attr_celeba.txt").write_text("7" + text[text.index("\n"):])
    with pytest.raises(DatasetError, match="announces 7"):
        read_celeba(root, split="all")


def test_celeba_image_dir_option(celeba_root: Path):
    (celeba_root / "img_align_celeba").rename(celeba_root / "aligned")
    df = read_celeba(celeba_root, image_dir="aligned")
    assert all(Path(p).is_file() and Path(p).parent.name == "aligned" for p in df["path"])


# ---------------------------------------------------------------- rfw


@pytest.fixture
def rfw_root(tmp_path: Path) -> Path:
    for race, ident in (("African", "m.01a"), ("Asian", "m.02b"), ("Caucasian", "m.03c"), ("Indian", "m.04d")):
        for k in (1, 2):
            _image(tmp_path / race / ident / f"{ident}_000{k}.jpg", k)
    pd.DataFrame({
        "Image": ["African/m.01a/m.01a_0001.jpg", "m.02b_0002.jpg", "Indian\\m.04d\\m.04d_0001", "nobody.jpg"],
        "Skin Type": [6, 3, 4, 2],
        "Eye-lid": ["monolid", "double", "double", "double"],
        "NOSE": ["wide", "narrow", "wide", "wide"],
        "lips": ["big", "small", "big", "small"],
        "hair_type": ["curly", "straight", "wavy", "bald"],
        "Hair Color": ["black", "black", "brown", "red"],
    }).to_csv(tmp_path / "phenotypes.csv", index=False)
    return tmp_path


def test_rfw_layout_without_phenotypes(rfw_root: Path):
    df = read_rfw(rfw_root)
    assert list(df.columns) == ["image_id", "path", "race", "identity"]
    assert len(df) == 8
    assert df.set_index("image_id").loc["Asian/m.02b/m.02b_0001", "identity"] == "m.02b"
    assert set(df["race"]) == {"African", "Asian", "Caucasian", "Indian"}


def test_rfw_phenotypes_variant_columns(rfw_root: Path):
    df = read_rfw(rfw_root, phenotypes="phenotypes.csv").set_index("image_id")
    assert set(PHENOTYPE_COLUMNS) <= set(df.columns)
    assert df.loc["African/m.01a/m.01a_0001", "skin_type"] == 6
    assert df.loc["Asian/m.02b/m.02b_0002", "hair_colour"] == "black"
    assert df.loc["Indian/m.04d/m.04d_0001", "hair_type"] == "wavy"
    assert df.loc["Indian/m.04d/m.04d_0001", "eyelid"] == "double"
    assert pd.isna(df.loc["Caucasian/m.03c/m.03c_0001", "skin_type"])
    assert pd.isna(df.loc["African/m.01a/m.01a_0002", "nose"])
    assert int(df["skin_type"].notna().sum()) == 3
    assert df.attrs["unmatched_phenotypes"] == 1


def test_rfw_phenotype_name_variants():
    got = normalise_phenotype_columns(["Skin_Colour", "eyelid", "Nose Shape", "LIPS", "Hair Type", "hair_color", "x"])
    assert got == {"Skin_Colour": "skin_type", "eyelid": "eyelid", "Nose Shape": "nose", "LIPS": "lips",
                   "Hair Type": "hair_type", "hair_color": "hair_colour"}


def test_rfw_bad_skin_type_and_missing_file(rfw_root: Path):
    pd.DataFrame({"image": ["m.01a_0001.jpg"], "skin_type": [9]}).to_csv(rfw_root / "bad.csv", index=False)
    with pytest.raises(DatasetError, match="1-6"):
        read_rfw(rfw_root, phenotypes="bad.csv")
    with pytest.raises(DatasetError, match="missing.csv"):
        read_rfw(rfw_root, phenotypes="missing.csv")


# ---------------------------------------------------------------- manifest


def _labelled_folder(root: Path, counts: dict[tuple[str, str], int]) -> Path:
    """CSV dataset with columns race, sex and the given count per (race, sex)."""
    rows, i = [], 0
    for (race, sex), n in counts.items():
        for _ in range(n):
            _image(root / f"{i:03d}.png", i)
            rows.append({"path": f"{i:03d}.png", "race": race, "sex": sex})
            i += 1
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root / "labels.csv"


COUNTS = {("A", "f"): 5, ("A", "m"): 3, ("B", "f"): 4, ("B", "m"): 2, ("C", "f"): 6}


def test_manifest_columns_order_and_checksums(tmp_path: Path):
    labels = _labelled_folder(tmp_path, COUNTS)
    (tmp_path / "003.png").unlink()
    m = build_manifest("csv", labels)
    assert list(m.columns) == ["image_id", "path", "race", "sex", "checksum"]
    assert set(MANIFEST_COLUMNS) <= set(m.columns)
    assert m["image_id"].tolist() == sorted(m["image_id"])
    row = m.set_index("image_id")
    assert row.loc["000", "checksum"] == _sha(tmp_path / "000.png")
    assert row.loc["003", "checksum"] is None
    assert len(m) == 20
    assert build_manifest("csv", labels, checksums=False)["checksum"].isna().all()


def test_manifest_limit_per_group(tmp_path: Path):
    labels = _labelled_folder(tmp_path, COUNTS)
    m = build_manifest("csv", labels, limit_per_group=3, group_columns=["race"], checksums=False)
    assert m["race"].value_counts().to_dict() == {"A": 3, "B": 3, "C": 3}
    small = build_manifest("csv", labels, limit_per_group=2, group_columns=["race"], checksums=False)
    assert set(small["image_id"]) < set(m["image_id"])
    with pytest.raises(DatasetError, match="positive"):
        build_manifest("csv", labels, limit_per_group=0, group_columns=["race"])
    with pytest.raises(DatasetError, match="nope"):
        build_manifest("csv", labels, limit_per_group=1, group_columns=["nope"])


def test_manifest_balance_single_column(tmp_path: Path):
    labels = _labelled_folder(tmp_path, COUNTS)
    m = build_manifest("csv", labels, balance_by="sex", checksums=False)
    assert m["sex"].value_counts().to_dict() == {"f": 5, "m": 5}
    m = build_manifest("csv", labels, balance_by="race", checksums=False)
    assert m["race"].value_counts().to_dict() == {"A": 6, "B": 6, "C": 6}


def test_manifest_balance_two_columns(tmp_path: Path):
    labels = _labelled_folder(tmp_path, COUNTS)
    m = build_manifest("csv", labels, balance_by=["race", "sex"], checksums=False)
    sizes = m.groupby(["race", "sex"]).size()
    assert len(sizes) == 5 and set(sizes) == {2}
    limited = build_manifest("csv", labels, balance_by="race", limit_per_group=4, checksums=False)
    assert set(limited["race"].value_counts()) == {4}


def test_manifest_seed_determinism(tmp_path: Path):
    labels = _labelled_folder(tmp_path, COUNTS)
    kw = dict(limit_per_group=2, group_columns=["race"], checksums=False)
    ids = [build_manifest("csv", labels, seed=s, **kw)["image_id"].tolist() for s in (7, 7, 8, 9, 10)]
    assert ids[0] == ids[1]
    assert any(other != ids[0] for other in ids[2:])


def test_manifest_split(tmp_path: Path, csv_dataset: Path, fairface_root: Path, celeba_root: Path):
    assert len(build_manifest("csv", csv_dataset, split="test", checksums=False)) == 3
    assert len(build_manifest("fairface", fairface_root, split="train", checksums=False)) == 3
    assert build_manifest("celeba", celeba_root, split="val", checksums=False)["image_id"].tolist() == ["000003"]
    _image(tmp_path / "folder" / "g" / "a.png")
    with pytest.raises(DatasetError, match="no splits"):
        build_manifest("folder", tmp_path / "folder", split="test")


def test_manifest_duplicate_ids(tmp_path: Path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png", 5)
    pd.DataFrame({"path": ["a.png", "b.png"], "id": ["same", "same"]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(DatasetError, match="duplicated image_id"):
        build_manifest("csv", tmp_path / "l.csv", options={"id_column": "id"})


def test_manifest_errors(tmp_path: Path, csv_dataset: Path):
    with pytest.raises(DatasetError, match="known readers") as err:
        build_manifest("imagenet", csv_dataset)
    assert all(name in str(err.value) for name in READERS)
    with pytest.raises(DatasetError, match="relative to the spec file"):
        build_manifest("csv", tmp_path / "missing.csv")
    with pytest.raises(DatasetError, match="no option"):
        build_manifest("csv", csv_dataset, options={"colour": 1})
    with pytest.raises(DatasetError, match="no images"):
        build_manifest("folder", tmp_path / "img")


def test_manifest_keeps_utkface_skipped(tmp_path: Path):
    _image(tmp_path / "30_0_3_20170101.jpg")
    _image(tmp_path / "bad.jpg")
    with pytest.warns(UserWarning):
        m = build_manifest("utkface", tmp_path)
    assert [name for name, _ in m.attrs["skipped"]] == ["bad.jpg"]


def test_manifest_parquet_roundtrip(tmp_path: Path):
    try:
        import pyarrow  # noqa: F401
    except ImportError as e:  # e.g. a pyarrow built for another numpy
        pytest.skip(f"pyarrow unusable: {e}")
    (tmp_path / "d").mkdir()
    labels = _labelled_folder(tmp_path / "d", {("A", "f"): 2})
    (tmp_path / "d" / "001.png").unlink()
    m = build_manifest("csv", labels)
    out = write_manifest(m, tmp_path / "out" / "manifest.parquet")
    assert not [p for p in out.parent.iterdir() if p.suffix == ".tmp"]
    back = read_manifest_file(out)
    assert back["image_id"].tolist() == m["image_id"].tolist()
    assert back["checksum"].iloc[0] == m["checksum"].iloc[0] and back["checksum"].iloc[1] is None
    with pytest.raises(DatasetError):
        read_manifest_file(tmp_path / "none.parquet")


def test_write_manifest_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    target = tmp_path / "manifest.parquet"
    target.write_bytes(b"old")
    m = pd.DataFrame({"image_id": ["a"], "path": ["/x/a.png"], "checksum": [None]})

    def broken(self, path, **kw):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(OSError, match="disk full"):
        write_manifest(m, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.parquet"]
    with pytest.raises(DatasetError, match="checksum"):
        write_manifest(m.drop(columns="checksum"), target)


def test_rfw_ambiguous_or_repeated_phenotype_entries(tmp_path: Path):
    _image(tmp_path / "Asian" / "id1" / "0001.jpg")
    _image(tmp_path / "Asian" / "id2" / "0001.jpg", 3)
    pd.DataFrame({"image": ["0001.jpg"], "skin_type": [2]}).to_csv(tmp_path / "amb.csv", index=False)
    with pytest.raises(DatasetError, match="matches 2 images"):
        read_rfw(tmp_path, phenotypes="amb.csv")
    pd.DataFrame({"image": ["Asian/id1/0001.jpg", "Asian/id1/0001"], "skin_type": [2, 3]}).to_csv(
        tmp_path / "twice.csv", index=False)
    with pytest.raises(DatasetError, match="labelled twice"):
        read_rfw(tmp_path, phenotypes="twice.csv")
    pd.DataFrame({"image": ["Asian/id2/0001.jpg"], "skin_type": [5]}).to_csv(tmp_path / "ok.csv", index=False)
    df = read_rfw(tmp_path, phenotypes=tmp_path / "ok.csv").set_index("image_id")
    assert df.loc["Asian/id2/0001", "skin_type"] == 5 and pd.isna(df.loc["Asian/id1/0001", "skin_type"])


def test_csv_uses_an_image_id_column_when_present(tmp_path):
    from PIL import Image
    import pandas as pd
    from fairbits.data.readers import read_csv

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    pd.DataFrame({"path": ["a.png"], "image_id": ["face-7"], "grp": ["x"]}).to_csv(tmp_path / "l.csv", index=False)
    df = read_csv(tmp_path / "l.csv")
    assert list(df["image_id"]) == ["face-7"] and "grp" in df.columns


# ================================================================ published layouts (issue 12)
# Fixtures are built by tests/published_layouts.py in each dataset's published layout;
# docs/datasets.md says where each detail of those layouts comes from.

RFW_IDS = {"African": ["m.011y5k", "m.01257s"], "Asian": ["m.0288zrm"], "Caucasian": ["m.03c"],
           "Indian": ["m.0_4pw", "m.0vshsz9"]}
EYELID_OF = {"narrow": "monolid", "normal": "other"}


def test_rfw_published_identity_labels(tmp_path: Path):
    root = write_rfw(tmp_path / "rfw", RFW_IDS, per_identity=3)
    rows = random_published_rows(RFW_IDS, seed=3)
    labelled = [r for r in rows if r["Class_ID"] != "Indian/m.0vshsz9"]        # an identity without labels
    labelled.append({**labelled[0], "Class_ID": "Asian/m.0gone"})             # labels without images
    labelled[1]["haircolor"] = " Black "                                       # case and spaces ignored
    write_rfw_metadata(root / "RFW_metadata_FDA.csv", labelled)
    df = read_rfw(root, phenotypes="RFW_metadata_FDA.csv")
    assert len(df) == 6 * 3 and set(PHENOTYPE_COLUMNS) <= set(df.columns)
    assert df["skin_type"].dtype == "Int64"
    for rec in df.to_dict("records"):
        ident = f"{rec['race']}/{rec['identity']}"
        assert rec["image_id"].startswith(ident + "/" + rec["identity"] + "_000")
        src = next((r for r in labelled if r["Class_ID"] == ident), None)
        if src is None:
            assert all(pd.isna(rec[c]) for c in PHENOTYPE_COLUMNS)
            continue
        assert rec["skin_type"] == int(src["skintype"].removeprefix("type"))
        assert rec["eyelid"] == EYELID_OF[src["eye"]]
        assert (rec["nose"], rec["lips"], rec["hair_type"]) == (src["nose"], src["lips"], src["hairtype"])
        assert rec["hair_colour"] == src["haircolor"].strip().lower()
    assert df.attrs["phenotype_form"] == "identity"
    assert df.attrs["identities_without_images"] == 1 == df.attrs["unmatched_phenotypes"]
    assert df.attrs["identities_without_images_examples"] == ["Asian/m.0gone"]
    assert df.attrs["images_without_phenotypes"] == 3
    assert df.attrs["phenotype_columns_ignored"] == ["Unnamed: 0"]
    # the manifest keeps the notes
    m = build_manifest("rfw", root, options={"phenotypes": "RFW_metadata_FDA.csv"}, checksums=False)
    assert m.attrs["identities_without_images"] == 1 and len(m) == 18


@pytest.mark.parametrize("column, value, allowed", [
    ("skintype", "type7", "1-6"), ("skintype", "dark", "1-6"), ("eye", "monolids", "['narrow', 'normal']"),
    ("lips", "medium", "['big', 'small']"), ("hairtype", "afro", "['bald', 'curly', 'straight', 'wavy']"),
    ("haircolor", "purple", "['black', 'blonde', 'brown', 'gray', 'red']"), ("nose", "long", "['wide', 'narrow']"),
])
def test_rfw_published_unknown_value_names_row_and_allowed(tmp_path: Path, column, value, allowed):
    root = write_rfw(tmp_path, RFW_IDS, per_identity=1)
    rows = random_published_rows(RFW_IDS)
    rows[2][column] = value
    write_rfw_metadata(root / "fda.csv", rows)
    with pytest.raises(DatasetError) as err:
        read_rfw(root, phenotypes="fda.csv")
    msg = str(err.value)
    assert "row 4 of" in msg and rows[2]["Class_ID"] in msg and repr(value) in msg and allowed in msg


def test_rfw_published_bad_class_id_and_repeats(tmp_path: Path):
    root = write_rfw(tmp_path, RFW_IDS, per_identity=1)
    rows = random_published_rows(RFW_IDS)
    for bad in ("Martian/m.1", "m.011y5k", "African/m.1/x"):
        write_rfw_metadata(root / "fda.csv", rows[:1] + [{**rows[1], "Class_ID": bad}])
        with pytest.raises(DatasetError, match=r"row 3 of .*<Race>/<identity>"):
            read_rfw(root, phenotypes="fda.csv")
    write_rfw_metadata(root / "fda.csv", rows + [dict(rows[0])])
    with pytest.raises(DatasetError, match=rf"row {len(rows) + 2} .*already labelled in row 2"):
        read_rfw(root, phenotypes="fda.csv")
    write_rfw_metadata(root / "fda.csv", rows)
    text = (root / "fda.csv").read_text().replace(",eye,", ",eyes_colour,", 1)
    (root / "fda.csv").write_text(text)
    with pytest.raises(DatasetError, match="no 'eye' column"):
        read_rfw(root, phenotypes="fda.csv")


def test_rfw_per_image_form_accepts_published_values(rfw_root: Path):
    # the per-image form with the published spellings: skintype typeN, eye narrow/normal
    pd.DataFrame({"image": ["African/m.01a/m.01a_0001.jpg", "m.02b_0002.jpg"], "skintype": ["type6", "type2"],
                  "eye": ["narrow", "normal"]}).to_csv(rfw_root / "per_image.csv", index=False)
    df = read_rfw(rfw_root, phenotypes="per_image.csv").set_index("image_id")
    assert df.loc["African/m.01a/m.01a_0001", "skin_type"] == 6 and df.loc["Asian/m.02b/m.02b_0002", "skin_type"] == 2
    assert df.loc["African/m.01a/m.01a_0001", "eyelid"] == "monolid"
    assert df.loc["Asian/m.02b/m.02b_0002", "eyelid"] == "other"
    assert df.attrs["phenotype_form"] == "image" and df.attrs["images_without_phenotypes"] == 6


def test_rfw_released_layout_with_landmarks(tmp_path: Path):
    test = tmp_path / "test"
    write_rfw(test / "data", {"African": ["m.0c7mh2"], "Asian": ["m.0a1"]}, per_identity=2)
    rng = np.random.default_rng(0)
    pts = {("m.0c7mh2", "m.0c7mh2_0001.jpg"): rng.uniform(100, 300, 10).round(3).tolist(),
           ("m.0c7mh2", "m.0c7mh2_0002.jpg"): rng.uniform(100, 300, 10).round(3).tolist(),
           ("m.0gone", "m.0gone_0001.jpg"): rng.uniform(100, 300, 10).round(3).tolist()}
    write_rfw_landmarks(test / "txts", "African", pts)      # no Asian landmark file
    df = read_rfw(test)
    assert sorted(df["image_id"]) == ["African/m.0c7mh2/m.0c7mh2_0001", "African/m.0c7mh2/m.0c7mh2_0002",
                                      "Asian/m.0a1/m.0a1_0001", "Asian/m.0a1/m.0a1_0002"]
    assert list(df.columns) == ["image_id", "path", "race", "identity", *LANDMARK_COLUMNS]
    row = df.set_index("image_id").loc["African/m.0c7mh2/m.0c7mh2_0002"]
    np.testing.assert_allclose(row[list(LANDMARK_COLUMNS)].to_numpy(float), pts[("m.0c7mh2", "m.0c7mh2_0002.jpg")])
    assert LANDMARK_COLUMNS[:2] == ("lmk_left_eye_x", "lmk_left_eye_y")
    assert df[df["race"] == "Asian"][list(LANDMARK_COLUMNS)].isna().all().all()
    assert df.attrs["images_without_landmarks"] == 2 and df.attrs["landmarks_without_images"] == 1
    assert list(read_rfw(test, landmarks=False).columns) == ["image_id", "path", "race", "identity"]
    assert read_rfw(test / "data").attrs["images_without_landmarks"] == 2   # root = test/data finds ../txts
    # a broken line is named
    f = test / "txts" / "African" / "African_lmk.txt"
    f.write_text(f.read_text() + "./test/data/African/m.x/m.x_0001.jpg\t0\t1\t2\n")
    with pytest.raises(DatasetError, match=r"line 4 of .*African_lmk.txt"):
        read_rfw(test)


def test_rfw_without_landmark_files_has_no_landmark_columns(tmp_path: Path):
    root = write_rfw(tmp_path, {"Indian": ["m.1"]}, per_identity=1)
    df = read_rfw(root)
    assert list(df.columns) == ["image_id", "path", "race", "identity"] and "landmark_files" not in df.attrs


# ---------------------------------------------------------------- FairFace as published


def test_fairface_padding_variants(tmp_path: Path):
    rows = write_fairface(tmp_path, {"train": 4, "val": 3})
    with pytest.raises(DatasetError, match="padding: 0.25 or padding: 1.25"):
        read_fairface(tmp_path)
    small = read_fairface(tmp_path, padding=0.25)
    large = read_fairface(tmp_path, split="val", padding=1.25)
    assert small["image_id"].tolist() == large["image_id"].tolist() == ["val/1", "val/2", "val/3"]
    assert all(f"/{FAIRFACE_FOLDERS[0.25]}/val/" in p for p in small["path"])
    assert [Image.open(p).size for p in large["path"]] == [(16, 16)] * 3
    assert large.attrs["padding"] == 1.25 and large.attrs["image_dir"] == FAIRFACE_FOLDERS[1.25]
    assert small["age"].tolist() == [r["age"] for r in rows["val"]]
    assert small["race"].tolist() == [r["race"] for r in rows["val"]]
    assert small["service_test"].tolist() == [r["service_test"] == "True" for r in rows["val"]]
    assert small["service_test"].dtype == bool
    train = read_fairface(tmp_path, split="train", image_dir=FAIRFACE_FOLDERS[1.25])
    assert len(train) == 4 and train.attrs["padding"] == 1.25
    with pytest.raises(DatasetError, match="0.25 or 1.25"):
        read_fairface(tmp_path, padding=0.5)
    assert len(build_manifest("fairface", tmp_path, split="train", options={"padding": 0.25}, checksums=False)) == 4


def test_fairface_single_variant_nested_and_missing(tmp_path: Path):
    write_fairface(tmp_path / "one", {"val": 2}, paddings=(1.25,), nested=True)
    df = read_fairface(tmp_path / "one")      # the one variant present, unzipped into a same-named folder
    assert df.attrs["padding"] == 1.25 and all(Path(p).is_file() for p in df["path"])
    write_fairface(tmp_path / "none", {"val": 2}, paddings=())
    with pytest.raises(DatasetError, match="no image folder"):
        read_fairface(tmp_path / "none")


# ---------------------------------------------------------------- UTKFace as published


def test_utkface_aligned_and_wild_parts(tmp_path: Path):
    aligned = ["25_0_2_20170116174525125", "39_1_20170116174525125", "3_1_4_20161219140623097"]
    wild = {"part1": ["25_0_2_20170116174525125", "80_1_0_20170110"], "part2": ["1_0_3_20170109142408075"]}
    write_utkface(tmp_path, aligned, wild)
    with pytest.raises(DatasetError, match=r"part: aligned \| wild"):
        read_utkface(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1"):
        a = read_utkface(tmp_path, part="aligned")
    assert a["image_id"].tolist() == ["UTKFace/25_0_2_20170116174525125", "UTKFace/3_1_4_20161219140623097"]
    assert a.attrs["skipped"][0][0] == "UTKFace/39_1_20170116174525125.jpg.chip.jpg"
    assert "4 fields" in a.attrs["skipped"][0][1]
    w = read_utkface(tmp_path, part="wild")
    assert w["image_id"].tolist() == ["part1/25_0_2_20170116174525125", "part1/80_1_0_20170110",
                                      "part2/1_0_3_20170109142408075"]
    assert w["race"].tolist() == ["Asian", "White", "Indian"] and w["age"].tolist() == [25, 80, 1]
    with pytest.warns(UserWarning):
        only_aligned = read_utkface(tmp_path / "UTKFace")   # the aligned folder itself as root
    assert only_aligned["image_id"].tolist() == ["25_0_2_20170116174525125", "3_1_4_20161219140623097"]
    with pytest.raises(DatasetError, match="part must be one of"):
        read_utkface(tmp_path, part="parts")


# ---------------------------------------------------------------- CelebA as published


@pytest.mark.parametrize("drive_layout", [False, True])
def test_celeba_published_files(tmp_path: Path, drive_layout: bool):
    rng = np.random.default_rng(1)
    values = rng.choice([-1, 1], size=(6, 40))
    names = write_celeba(tmp_path, CELEBA_ATTRS, values, [0, 0, 1, 1, 2, 2], identities=[7, 7, 3, 9, 3, 12],
                         drive_layout=drive_layout)
    every = read_celeba(tmp_path, split="all")
    assert every["image_id"].tolist() == [n[:-4] for n in names]
    assert every["identity"].tolist() == [7, 7, 3, 9, 3, 12]
    assert (every[CELEBA_ATTRS].to_numpy() == (values == 1)).all()
    assert all(Path(p).is_file() for p in every["path"])
    assert read_celeba(tmp_path)["image_id"].tolist() == ["000005", "000006"]


# ---------------------------------------------------------------- ids of files differing only by suffix (issue 9)


def test_folder_gives_distinct_ids_to_same_stem(tmp_path: Path):
    _image(tmp_path / "g" / "x.jpg", 1)
    _image(tmp_path / "g" / "x.png", 2)
    _image(tmp_path / "g" / "y.png", 3)
    _image(tmp_path / "h" / "x.png", 4)       # same stem in another folder: no clash
    with pytest.warns(UserWarning, match="differ from another only by their suffix"):
        df = read_folder(tmp_path)
    assert sorted(df["image_id"]) == ["g/x.jpg", "g/x.png", "g/y", "h/x"]
    assert df.attrs["id_clashes"] == ["g/x.jpg", "g/x.png"]
    with pytest.warns(UserWarning):
        m = build_manifest("folder", tmp_path)      # refused before: "duplicated image_id"
    ids = dict(zip(m["image_id"], m["checksum"]))
    assert ids["g/x.jpg"] == _sha(tmp_path / "g" / "x.jpg") and ids["g/x.png"] == _sha(tmp_path / "g" / "x.png")
    assert m.attrs["id_clashes"] == ["g/x.jpg", "g/x.png"]


def test_other_readers_give_distinct_ids_to_same_stem(tmp_path: Path):
    _image(tmp_path / "c" / "a.jpg")
    _image(tmp_path / "c" / "a.png", 5)
    pd.DataFrame({"path": ["a.jpg", "a.png"], "g": [1, 2]}).to_csv(tmp_path / "c" / "l.csv", index=False)
    with pytest.warns(UserWarning):
        assert read_csv(tmp_path / "c" / "l.csv")["image_id"].tolist() == ["a.jpg", "a.png"]
    pd.DataFrame({"path": ["a.jpg", "a.jpg"], "g": [1, 2]}).to_csv(tmp_path / "c" / "twice.csv", index=False)
    with pytest.raises(DatasetError, match="duplicated image_id"):    # one file listed twice stays an error
        build_manifest("csv", tmp_path / "c" / "twice.csv")
    root = write_rfw(tmp_path / "rfw", {"Asian": ["m.1"]}, per_identity=1)
    _image(root / "Asian" / "m.1" / "m.1_0001.png", 9)
    with pytest.warns(UserWarning):
        assert sorted(read_rfw(root)["image_id"]) == ["Asian/m.1/m.1_0001.jpg", "Asian/m.1/m.1_0001.png"]
    _image(tmp_path / "utk" / "25_0_2_2017.jpg")
    _image(tmp_path / "utk" / "25_0_2_2017.jpg.chip.jpg", 3)
    with pytest.warns(UserWarning):
        assert sorted(read_utkface(tmp_path / "utk")["image_id"]) == ["25_0_2_2017.jpg", "25_0_2_2017.jpg.chip.jpg"]
