"""Atomic file writes: the one way fairbits writes a file that another step may read.

A file appears under its name only through ``os.replace`` of a finished temporary file
in the same folder, so an interrupted process leaves the old file or the new one, never
half of one.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _is_disk_full(e: OSError) -> bool:
    return e.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e) \
        or "Disk quota exceeded" in str(e)


def atomic_write(path: str | Path, write: Callable[[str], Any], replace: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``.

    Parent folders are created. The temporary name (``.NAME.XXXXXXXX.tmp``) comes from
    ``mkstemp``, whose empty file is removed again so that ``write`` creates the file: ext4
    flushes a file that was truncated and rewritten to disk when it is closed, which made
    each write, and each later removal of the file, cost milliseconds. The file gets the
    usual permissions (``0o666`` less the umask). On any error the temporary file is
    removed. With ``replace=False`` an existing ``path`` is left alone (the finished file
    is hard-linked under its name, which fails if the name is taken).

    Raises:
        DiskFull: no space (or quota) left; the message names ``path``.
        FileExistsError: ``replace=False`` and ``path`` exists.
    """
    from fairbits.errors import DiskFull

    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)  # write() creates it: no truncation of an existing file (see above)
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and _is_disk_full(e):
            raise DiskFull(f"no space left on device while writing {path}; free space and run the "
                           "same command again to resume") from None
        raise
    return path


def _publish_new(tmp: str, path: Path) -> None:
    """Give the finished ``tmp`` the name ``path`` unless that name exists (FileExistsError)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise FileExistsError(errno.EEXIST, "file exists", str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def part_path(folder: str | Path, number: int, suffix: str) -> Path:
    """``folder/part-NNNNNN<suffix>``: the name of part ``number`` (zero-padded to six digits)."""
    return Path(folder) / f"part-{number:06d}{suffix}"


def last_part_number(folder: str | Path, suffix: str) -> int:
    """The highest ``NNNNNN`` of ``folder/part-NNNNNN<suffix>``; -1 when there is none
    (one listing of the folder)."""
    numbers = [int(p.name[len("part-"):-len(suffix)]) for p in Path(folder).glob(f"part-*{suffix}")
               if p.name[len("part-"):-len(suffix)].isdigit()]
    return max(numbers, default=-1)


def next_part(folder: str | Path, suffix: str) -> Path:
    """``folder/part-NNNNNN<suffix>``, numbered one past the highest existing part (parts
    are appended, never renumbered, so a part set aside leaves a gap and no clash).

    Lists the folder on every call; a writer of many parts to one folder keeps its own
    count instead (:meth:`fairbits.audit.store.RunStore.append`)."""
    return part_path(folder, last_part_number(folder, suffix) + 1, suffix)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


NPZ_MAX_BYTES = 2 << 30  # 2 GiB unpacked: far above any fairbits model or sampler file


def read_npz(path: str | Path, fmt: str, what: str, hint: str = "", max_bytes: int = NPZ_MAX_BYTES) -> dict:
    """The arrays of a fairbits ``.npz`` file whose ``format`` entry is ``fmt``; never unpickles.

    A file whose members would unpack to more than ``max_bytes`` in all is refused before
    anything is decompressed (a small compressed file can expand to gigabytes).

    Raises:
        FairbitsError: the file is missing (``hint`` says how to make one), unreadable,
            too large unpacked, or of another format. ``what`` names the file's kind in messages.
    """
    import zipfile

    from fairbits.errors import FairbitsError

    p = Path(path)
    if not p.is_file():
        raise FairbitsError(f"{what} {str(p)!r} not found" + (f" ({hint})" if hint else ""))
    try:
        import numpy as np

        with zipfile.ZipFile(p) as zf:
            unpacked = sum(i.file_size for i in zf.infolist())
        if unpacked > max_bytes:
            raise FairbitsError(f"{p} would unpack to {unpacked / 2**30:.1f} GiB (limit "
                                f"{max_bytes / 2**30:.0f} GiB); it is not a {what} fairbits wrote")
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FairbitsError(f"{p} is not a {what} (.npz): {e}") from None
    if "format" not in arrays or str(arrays["format"]) != fmt:
        raise FairbitsError(f"{p} is not a {fmt} file")
    return arrays
