"""The one exception family of fairbits.

Bad *configuration* (a spec, a command-line option, a missing dataset) raises a
:class:`FairbitsError` subclass before any work starts; the CLI prints its message and
exits with status 2. Bad *input data* (one unreadable image) never raises out of a run:
it becomes a result row with an ``error`` string.
"""


class FairbitsError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class SpecError(FairbitsError):
    """The audit spec is invalid (unknown codec or measure, missing path, unknown column...)."""


class DatasetError(FairbitsError):
    """A dataset cannot be read as asked (missing label file, bad layout, path escaping root)."""


class CodecUnavailable(FairbitsError):
    """A registered codec cannot run here (a plugin or weights are missing)."""


class ImageError(Exception):
    """One image cannot be used. Caught by the runner and stored as that image's ``error``."""


class FairbitsWarning(UserWarning):
    """Something was repaired or changed on the way (a lost part recomputed, labels updated);
    the CLI prints these as ``warning: ...`` lines."""


class DiskFull(FairbitsError):
    """No space left while writing a file; the run resumes once space is freed."""
