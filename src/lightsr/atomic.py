"""Atomic file writes: a reader never sees a half-written file under its final name.

Every file lightsr writes (images, checkpoints, logs' snapshots, exports, results) goes through
:func:`atomic_write`. It sits at the bottom of the import order: it imports nothing of lightsr.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` and rename the result onto ``path``, so readers never see a
    half-written file (a killed process leaves the old file, or none). The data is flushed to
    disk (fsync) before the rename and the folder entry after it, so a power loss cannot leave
    an empty or truncated file under the final name either."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_file(path: str) -> None:
    # The writer may have closed its handle without flushing the OS cache; without this an
    # os.replace can reach the disk before the data does.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Persist the rename. Best effort: Windows cannot open folders, some file systems refuse
    fsync on them; the file itself is already safe."""
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
