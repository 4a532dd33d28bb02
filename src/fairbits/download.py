"""Weights on demand: fetch a published weight file into torch.hub's cache on first use.

:func:`fetch` downloads with :func:`torch.hub.download_url_to_file`, as CompressAI and
torchvision do: the bytes go to a temporary ``*.partial`` file beside the target, a
progress bar goes to stderr, the SHA-256 of the bytes must start with the hash prefix
written in the file name (``...-7eb97409.pth.tar``; :func:`hash_prefix`), and only a
complete, verified file is renamed to its final name. So a broken or tampered download
leaves nothing in the cache.

The user stays in control:

* ``FAIRBITS_OFFLINE=1`` (or ``true``/``yes``/``on``) forbids every download; a missing
  file is then an error that says where to put it by hand.
* ``FAIRBITS_DOWNLOAD_TIMEOUT`` (seconds, default :data:`DEFAULT_TIMEOUT`) bounds the wait
  for the server on each connection attempt and each read.

Every failure (offline, unreachable server, HTTP error, time-out, hash mismatch) raises a
:class:`~fairbits.errors.FairbitsError` (or the subclass the caller asks for) naming the
URL and the path where the file can be put by hand.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import urllib.error
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch

from fairbits.errors import FairbitsError

OFFLINE_ENV = "FAIRBITS_OFFLINE"
TIMEOUT_ENV = "FAIRBITS_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT = 60.0
_HASH = re.compile(r"-([0-9a-f]{6,64})\.")


def offline() -> bool:
    """True when the user forbids downloads (``FAIRBITS_OFFLINE`` set to 1/true/yes/on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def hub_checkpoints() -> Path:
    """torch.hub's weight cache: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/...``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def file_name(url: str) -> str:
    """The last part of the URL's path: the name the file gets in the cache."""
    return Path(urlparse(url).path).name


def hash_prefix(name: str) -> str | None:
    """The SHA-256 prefix in a published weight file name (``x-1-7eb97409.pth.tar`` → ``7eb97409``).

    The name's last ``-<hex>.`` group of 6 to 64 lower-case hex digits; None if it has none.
    """
    found = _HASH.findall(name)
    return found[-1] if found else None


def timeout() -> float:
    """Seconds to wait for the server (``$FAIRBITS_DOWNLOAD_TIMEOUT``, default 60)."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise FairbitsError(f"{TIMEOUT_ENV}={raw!r} must be a positive number of seconds")
    return value


@contextmanager
def _socket_timeout(seconds: float):
    """torch.hub opens the URL without a time-out; bound it through the default socket time-out."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


def fetch(url: str, dst: str | Path, *, what: str, progress: bool = True,
          error: type[FairbitsError] = FairbitsError, hint: str = "") -> Path:
    """``dst`` if it exists, else download ``url`` to it (unless offline) and return it.

    Args:
        url: where the file is published; its name's hash prefix (:func:`hash_prefix`),
            if any, is checked against the SHA-256 of the downloaded bytes.
        dst: the file to create (its folder is created).
        what: what the file is, for messages (e.g. ``"bmshj2018-hyperprior zoo-q1 weights"``).
        progress: show torch.hub's progress bar on stderr.
        error: the FairbitsError subclass to raise.
        hint: an extra sentence for the error messages (e.g. another way to proceed).

    Raises:
        ``error``: downloads forbidden, server unreachable or slow, HTTP error, hash
            mismatch; the message names ``url`` and ``dst``. Nothing is left at ``dst``, and
            folders made for it are removed again.
    """
    dst = Path(dst).expanduser()
    if dst.is_file():
        return dst
    by_hand = f"Download {url} yourself and put it at {dst}" + (f"; {hint}" if hint else "") + "."
    if offline():
        raise error(f"{what}: {dst} is not in the cache and downloads are off ({OFFLINE_ENV}=1). {by_hand} "
                    f"Or unset {OFFLINE_ENV} to download it on first use.")
    wait = timeout()
    made = _missing_ancestors(dst.parent)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download(url, dst, what, progress, wait, error, by_hand)
    except BaseException:
        for folder in made:          # leave the cache as it was: no folder that only this try made
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return dst


def _missing_ancestors(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create for ``folder``, deepest first."""
    out = []
    while not folder.exists() and folder != folder.parent:
        out.append(folder)
        folder = folder.parent
    return out


def _download(url: str, dst: Path, what: str, progress: bool, wait: float, error: type[FairbitsError],
              by_hand: str) -> None:
    """torch.hub's download with a time-out; failures → ``error`` naming the URL and ``dst``."""
    expected = hash_prefix(dst.name)
    print(f"downloading {what}: {url} -> {dst}", file=sys.stderr)
    try:
        with _socket_timeout(wait):
            torch.hub.download_url_to_file(url, str(dst), hash_prefix=expected, progress=progress)
    except urllib.error.HTTPError as e:
        raise error(f"{what}: the server answered {e.code} {e.reason} for {url}. {by_hand}") from None
    except urllib.error.URLError as e:
        raise error(f"{what}: cannot reach {url} ({e.reason}). {by_hand} "
                    f"(Set {OFFLINE_ENV}=1 to never try.)") from None
    except (TimeoutError, socket.timeout) as e:
        raise error(f"{what}: no answer from {url} within {wait:g} s ({e or 'timed out'}; "
                    f"{TIMEOUT_ENV} sets the wait). {by_hand}") from None
    except RuntimeError as e:
        if "invalid hash value" not in str(e):
            raise
        raise error(f"{what}: the file downloaded from {url} is corrupt or not the published one: its "
                    f"SHA-256 does not start with {expected} ({e}); nothing was kept. Try again, or {by_hand[0].lower()}"
                    f"{by_hand[1:]}") from None
    except OSError as e:   # connection reset mid-transfer, disk full...
        raise error(f"{what}: download of {url} failed ({type(e).__name__}: {e}); nothing was kept. "
                    f"{by_hand}") from None


__all__ = ["DEFAULT_TIMEOUT", "OFFLINE_ENV", "TIMEOUT_ENV", "fetch", "file_name", "hash_prefix",
           "hub_checkpoints", "offline", "timeout"]
