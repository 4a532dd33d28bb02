"""Python objects named by ``package.module:attribute`` (user systems, user generators)."""

from __future__ import annotations

import importlib

from fairbits.errors import SpecError


def load_entry_point(entry: str, what: str = "entry"):
    """The callable named ``"package.module:function"`` (``module:attr.attr`` works too).

    ``what`` names the object in messages (``entry``, ``generator``...).

    Raises:
        SpecError: malformed name, module not importable, or attribute missing/not callable.
    """
    module, sep, attr = entry.partition(":")
    if not sep or not module or not attr or ":" in attr:
        raise SpecError(f"{what} {entry!r}: write it as 'package.module:function'")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise SpecError(f"{what} {entry!r}: cannot import {module!r} ({e}); is it on PYTHONPATH?") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise SpecError(f"{what} {entry!r}: {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise SpecError(f"{what} {entry!r} is not callable")
    return obj
