"""Final files that are either the old version or the new one, never half of either.

A file is written to a temporary sibling (same folder, so the rename stays on one file
system), flushed and fsync'd, then renamed over the target with :func:`os.replace`, which
POSIX and Windows make atomic; the folder is fsync'd so the rename itself survives a power
cut. A failure on the way (a full disk, a kill) leaves the previous file as it was and
removes the temporary one where it still can.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import RunWriteError


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be
    opened, e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO]:
    """``with atomic_open(path) as f: f.write(...)``: ``path`` gets the new content only if
    the block finishes; an ``OSError`` becomes a one-line :class:`RunWriteError`."""
    path = Path(path)
    binary = "b" in mode
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:  # O_EXCL: a fresh file of our own; mode 0o666 less the umask, as open() would
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise RunWriteError(path, e) from None
    try:
        with os.fdopen(fd, mode, encoding=None if binary else encoding,
                       newline=None if binary else newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise RunWriteError(path, e) from None
        raise
    fsync_dir(path.parent)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Replace ``path`` with ``data`` (text is written as UTF-8) atomically; return it."""
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    return Path(path)
