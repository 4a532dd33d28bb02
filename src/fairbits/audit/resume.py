"""Resuming a run safely: the same configuration, the same image bytes, every row present.

A run directory is resumed only by the run that made it:

* its *configuration* (dataset options, measures, seed) must match, else the run is
  refused with the keys that differ;
* its *images* must be the same files: an image added, removed or whose bytes changed is
  named and the run refused (its stored rows describe the old file);
* its *labels* may change (a corrected label file): the stored manifest is replaced and
  every statistic follows, since rows carry no labels (``load_results`` joins them from
  the manifest). The change is reported, image by image;
* its *cells* are verified: every part must be readable (an unreadable one is moved aside)
  and a cell marked done must hold a row for every image, else the missing rows are
  computed again.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field

import pandas as pd

from fairbits.audit.store import RunStore
from fairbits.errors import FairbitsError, FairbitsWarning
from fairbits.data.manifest import MANIFEST_COLUMNS

_EXAMPLES = 5


def config_fingerprint(config: dict) -> str:
    """A short hash of the parts of a run's configuration that its rows depend on."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} → {b!r}")
    return out


def check_same_config(old_info: dict, new_info: dict, run_dir) -> None:
    """Raise a FairbitsError naming what differs when ``run_dir`` holds another run."""
    if old_info.get("fingerprint") == new_info["fingerprint"]:
        return
    diff = _differences(old_info.get("config", {}), new_info["config"])
    what = "; ".join(diff[:_EXAMPLES]) if diff else "it was made by another fairbits version"
    raise FairbitsError(f"{run_dir} holds a run with another configuration ({what}); "
                        "choose a new --out directory (or delete the old one)")


@dataclass
class ManifestChange:
    """How a dataset differs from the manifest a run stored."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed_bytes: list[str] = field(default_factory=list)  # "image_id (path)"
    relabelled: list[str] = field(default_factory=list)     # "image_id: column old → new"

    @property
    def images_differ(self) -> bool:
        return bool(self.added or self.removed or self.changed_bytes)


def _some(items: list[str]) -> str:
    return ", ".join(items[:_EXAMPLES]) + (f" and {len(items) - _EXAMPLES} more" if len(items) > _EXAMPLES else "")


def compare_manifests(old: pd.DataFrame, new: pd.DataFrame) -> ManifestChange:
    """Images added, removed, with other bytes (checksum), or with other labels."""
    ch = ManifestChange()
    o, n = old.set_index("image_id"), new.set_index("image_id")
    ch.added = sorted(set(n.index) - set(o.index))
    ch.removed = sorted(set(o.index) - set(n.index))
    both = sorted(set(o.index) & set(n.index))
    a, b = o.loc[both, "checksum"], n.loc[both, "checksum"]
    moved = a.fillna("missing") != b.fillna("missing")
    ch.changed_bytes = [f"{i} ({n.at[i, 'path']})" for i in a.index[moved]]
    labels = [c for c in dict.fromkeys([*o.columns, *n.columns]) if c not in MANIFEST_COLUMNS]
    x = o.reindex(index=both, columns=labels).astype("string")  # a column one side lacks: all <NA>
    y = n.reindex(index=both, columns=labels).astype("string")
    differ = x.fillna("\0") != y.fillna("\0")
    for col in labels:
        ch.relabelled += [f"{i}: {col} {x.at[i, col]!s} → {y.at[i, col]!s}" for i in x.index[differ[col]]]
    return ch


def reconcile_manifest(store: RunStore, manifest: pd.DataFrame) -> None:
    """Bring the stored manifest up to date with the dataset, or refuse.

    Raises:
        FairbitsError: images were added or removed, or their bytes changed (each named).
    Warns:
        FairbitsWarning: labels changed; the stored manifest was updated.
    """
    if not store.manifest_path.is_file():  # a run killed before its manifest was stored
        store.write_manifest(manifest)
        return
    try:
        old = store.read_manifest()
    except FairbitsError:
        warnings.warn(f"{store.manifest_path} was unreadable; it was written again from the dataset",
                      FairbitsWarning, stacklevel=2)
        store.write_manifest(manifest)
        return
    ch = compare_manifests(old, manifest)
    if ch.images_differ:
        parts = []
        if ch.changed_bytes:
            parts.append(f"{len(ch.changed_bytes)} image(s) changed their bytes: {_some(ch.changed_bytes)}")
        if ch.added:
            parts.append(f"{len(ch.added)} image(s) are new: {_some(ch.added)}")
        if ch.removed:
            parts.append(f"{len(ch.removed)} image(s) are gone: {_some(ch.removed)}")
        raise FairbitsError(f"{store.root} was made from other images; " + "; ".join(parts) + ". Its stored "
                            "rows describe the old files: restore them, or start a new run with another --out")
    if ch.relabelled:
        store.write_manifest(manifest)
        warnings.warn(f"labels changed for {len(ch.relabelled)} image value(s) since this run started "
                      f"({_some(ch.relabelled)}); the stored manifest was updated and every statistic "
                      "follows the new labels", FairbitsWarning, stacklevel=2)


def verify_cells(store: RunStore, cell_ids: list[str], image_ids: set[str]) -> dict[str, set[str]]:
    """Image ids already stored per cell that still needs work (finished cells are left out).

    Unreadable parts are moved aside; a cell marked done that lacks rows loses its mark.
    Each repair is reported with a :class:`FairbitsWarning`.
    """
    todo: dict[str, set[str]] = {}
    for cid in cell_ids:
        scan = store.scan_cell(cid)
        for part, reason in scan.unreadable:
            moved = store.set_aside(part)
            warnings.warn(f"{part} is unreadable ({reason}); moved aside to {moved.name}, its rows are "
                          "computed again", FairbitsWarning, stacklevel=2)
        missing = image_ids - scan.ids
        if store.is_done(cid):
            if not missing:
                continue
            store.unmark_done(cid)
            warnings.warn(f"cell {cid} was finished but lacks {len(missing)} of {len(image_ids)} rows "
                          f"(e.g. {_some(sorted(missing))}); computing them again", FairbitsWarning, stacklevel=2)
        todo[cid] = scan.ids & image_ids
    return todo


def missing_rows(results: pd.DataFrame, manifest: pd.DataFrame, cell_ids: list[str]) -> dict[str, int]:
    """Rows each cell lacks against the manifest (cells with none left out)."""
    ids = set(manifest["image_id"])
    have = results.groupby(results["codec"] + "__" + results["setting"])["image_id"].agg(set)
    out = {c: len(ids - have.get(c, set())) for c in cell_ids}
    return {c: n for c, n in out.items() if n}
