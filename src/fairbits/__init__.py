"""fairbits: audit and reduce demographic bias in face-image compression and face generators."""

__version__ = "0.1.0"

from fairbits.errors import FairbitsError  # noqa: E402


def load_results(run_dir):
    """All per-image rows of a run directory as one pandas DataFrame (see ``fairbits.audit.store``)."""
    from fairbits.audit.store import load_results as _load

    return _load(run_dir)


__all__ = ["FairbitsError", "load_results", "__version__"]
