"""Safe file writes: a reader never sees a half-written file under its final name, a file is
never replaced unless the caller says so, and a name is claimed atomically.

Every file lightsr writes (images, checkpoints, logs' snapshots, exports, results) goes through
:func:`atomic_write` (or :func:`atomic_write_bytes`, :func:`atomic_write_unique`). The rule:

- The data goes to a temp file beside the target (``.<name>.<host>.<pid>.<random>.tmp``),
  is flushed to disk, then published under the final name in one step.
- ``overwrite=False`` (the default) publishes with ``os.link(tmp, path)``, which fails when the
  name is taken, so two processes racing for one name never both "win": one gets
  :class:`~lightsr.errors.OutputExistsError`, or, with :func:`atomic_write_unique`, the next
  free name of a sequence. ``overwrite=True`` replaces (``os.replace``): for what the user
  asked to replace, and for a program's own state files (a run's ``state.pt``).
- A temp file is removed when the write fails or the process is interrupted (SIGINT, and
  SIGTERM under :func:`sigterm_as_exit`, which ``lightsr``'s ``main`` installs). A temp file
  left by a killed process is removed by the next write of the same target once it is
  provably stale: its writer's pid (on this host) is gone, or it is older than an hour.
- An ``OSError`` from the write names the final path, not the temp file, so a full disk reads
  as "no space left ... writing <the file you asked for>".

:class:`FolderLock` keeps two processes out of one folder (a training run).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import FolderInUseError, OutputExistsError, OutputPathError

if sys.platform != "win32":
    import fcntl

#: A temp file whose writer cannot be checked (another host, Windows) is stale after this long.
STALE_AFTER_S = 3600.0
#: Candidates :func:`atomic_write_unique` tries (``name``, ``name_1``, ...) before giving up.
MAX_NUMBERED = 100_000

# Whose temp file is it: a short tag of this host's name (a pid means nothing on another
# machine writing to the same network folder), then the pid.
_HOST = f"{zlib.crc32(socket.gethostname().encode()) & 0xFFFFFF:06x}"
# Long names are cut in the temp name so it stays within the 255-byte name limit.
_NAME_KEEP = 120
# Errors of os.link that mean "this file system has no hard links" (FAT, some FUSE and SMB
# mounts): the O_EXCL fallback is used. Anything else (EACCES, ENOSPC, EROFS) is the answer.
_NO_LINK_ERRNOS = {
    getattr(errno, name)
    for name in ("EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EXDEV", "EMLINK", "EINVAL")
    if hasattr(errno, name)
}


def atomic_write(
    path: str | os.PathLike, write: Callable[[str], object], *, overwrite: bool = False
) -> Path:
    """Call ``write(tmp_path)`` and publish the result as ``path``; returns ``path``.

    Readers never see a half-written file: a failed or killed write leaves the old file (or
    none) and no temp file. The data is flushed (fsync) before publishing and the folder entry
    after it, so a power loss cannot leave an empty or truncated file under the final name.

    ``overwrite=False``: an existing ``path`` is never replaced; it raises
    :class:`~lightsr.errors.OutputExistsError` (before ``write`` runs when the name is taken
    already, and atomically at publishing when another process took it meanwhile).
    ``overwrite=True`` replaces it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(_exists_message(path))
    _remove_stale_temps(path)

    def publish(tmp: str) -> Path:
        if overwrite:
            os.replace(tmp, path)
        elif not _link_new(tmp, path):
            raise OutputExistsError(_exists_message(path))
        return path

    return _write_and_publish(path, write, publish)


def atomic_write_bytes(
    path: str | os.PathLike, data: bytes | bytearray | memoryview, *, overwrite: bool = False
) -> Path:
    """:func:`atomic_write` of ``data``. Serialisers that write files from C/C++ (torch.save,
    safetensors, onnx) turn a full disk into a RuntimeError or an abort; serialise to bytes in
    memory and write them with this, and the OS error surfaces as an OSError naming ``path``."""
    return atomic_write(path, lambda tmp: _write_all(tmp, data), overwrite=overwrite)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """:func:`atomic_write_bytes` of ``text`` as UTF-8 (newlines as given, on every OS)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def numbered(path: str | os.PathLike, k: int) -> Path:
    """The ``k``-th name of ``path``'s sequence: ``path`` itself for 0, else
    ``<stem>_<k><suffix>`` (``photo_x2.png``, ``photo_x2_1.png``, ``photo_x2_2.png``, ...)."""
    path = Path(path)
    return path if k == 0 else path.with_name(f"{path.stem}_{k}{path.suffix}")


def atomic_write_unique(path: str | os.PathLike, write: Callable[[str], object]) -> Path:
    """:func:`atomic_write` under the first free name of ``path``'s sequence (:func:`numbered`);
    returns the name taken. Each candidate is claimed with ``os.link``, which fails when taken,
    so processes writing the same name at once all get distinct names and none is lost (a
    check-then-rename would let two of them pick the same free name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)

    def publish(tmp: str) -> Path:
        for k in range(MAX_NUMBERED):
            candidate = numbered(path, k)
            if _link_new(tmp, candidate):
                return candidate
        raise OutputExistsError(
            f"{str(path)!r} and {MAX_NUMBERED:,} numbered names after it exist: clear out "
            "the folder or choose another one."
        )

    return _write_and_publish(path, write, publish)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path once links are followed, or the
    same inode (a hard link). False when either does not exist and the paths differ."""
    if Path(a).resolve() == Path(b).resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(*paths: str | os.PathLike | None, overwrite: bool) -> None:
    """Refuse, before a long computation rather than after it, outputs that cannot all be
    written: two that name one file (:class:`~lightsr.errors.OutputPathError`), or one that
    exists without ``overwrite`` (:class:`~lightsr.errors.OutputExistsError`). None entries
    (an output not asked for) are skipped. The write itself still claims each name
    atomically; this only moves the answer forward."""
    given = [Path(p) for p in paths if p is not None]
    for i, a in enumerate(given):
        for b in given[:i]:
            if a.resolve() == b.resolve():
                raise OutputPathError(
                    f"two outputs are the same file {str(a)!r}: give each its own name."
                )
    for path in given:
        if not overwrite and os.path.lexists(path):
            raise OutputExistsError(_exists_message(path))


def _exists_message(path: Path) -> str:
    return (
        f"{str(path)!r} exists and lightsr replaces files only when told to: pass --overwrite "
        "(overwrite=True in Python) to replace it, or choose another name."
    )


def _write_and_publish(
    path: Path, write: Callable[[str], object], publish: Callable[[str], Path]
) -> Path:
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f"{_temp_prefix(path.name)}{_HOST}.{os.getpid()}.",
            suffix=".tmp",
            dir=path.parent,
        )
    except OSError as exc:  # a folder that takes no files: name the file asked for
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
    os.close(fd)
    try:
        try:
            write(tmp)
            # mkstemp creates 0600; give the file the permissions a plain open() would have.
            os.chmod(tmp, 0o666 & ~_umask())
            _fsync_file(tmp)
            final = publish(tmp)
        except OSError as exc:
            # The temp name means nothing to the user: name the file they asked for.
            if exc.errno is not None and exc.filename in (None, tmp):
                raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
            raise
    except BaseException:
        # Also on KeyboardInterrupt / SystemExit (SIGINT, SIGTERM under sigterm_as_exit).
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # after os.link: the final name holds the data
    _fsync_dir(path.parent)
    return final


def _link_new(tmp: str, path: Path) -> bool:
    """Give the file ``tmp`` the name ``path`` if, and only if, nothing has it; False when
    something has. ``os.link`` checks and claims in one step (no check-then-rename race)."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
    # No hard links on this file system (FAT, some FUSE/SMB mounts): claim the name by
    # creating it with O_EXCL (atomic there too), then rename the finished temp file over our
    # own placeholder. A reader may see an empty file for a moment, never a partial one.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return False
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)  # our empty placeholder
        raise
    return True


def _write_all(tmp: str, data: bytes | bytearray | memoryview) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | getattr(os, "O_BINARY", 0))
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


_UMASK: int | None = None
_LOCK = threading.Lock()


def _umask() -> int:
    # Read once: os.umask can only be read by setting it, which would briefly give other
    # threads' new files a umask of 0.
    global _UMASK
    with _LOCK:
        if _UMASK is None:
            _UMASK = os.umask(0o022)
            os.umask(_UMASK)
        return _UMASK


def _fsync_file(path: str) -> None:
    # The writer may have closed its handle without flushing the OS cache; without this the
    # publishing step can reach the disk before the data does.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Persist the new name. Best effort: Windows cannot open folders, some file systems refuse
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


# ---------------------------------------------------------------------------------------------
# Stale temp files
# ---------------------------------------------------------------------------------------------


def _temp_prefix(name: str) -> str:
    return f".{name[:_NAME_KEEP]}."


# The part of a temp name after its prefix: host tag and pid (absent in temp files of older
# versions, which only the age rule removes), mkstemp's random part.
_TEMP_TAIL = re.compile(r"(?:(?P<host>[0-9a-f]{6})\.(?P<pid>\d+)\.)?[A-Za-z0-9_]+\.tmp")

# folder -> the temp-like names (".*.tmp") it held when this process first wrote into it.
# Listing a folder of 10,000 outputs for each of 10,000 writes would be quadratic; temp files
# that appear later come from live processes (or from ones killed since, which the next run
# cleans up).
_TEMPS_SEEN: dict[str, set[str]] = {}


def _remove_stale_temps(path: Path) -> None:
    """Remove the temp files of ``path`` (``.<name>.*.tmp``) left by writers that are gone."""
    folder = str(path.parent)
    with _LOCK:
        names = _TEMPS_SEEN.get(folder)
        if names is None:
            try:
                with os.scandir(folder) as it:
                    names = {e.name for e in it if e.name[:1] == "." and e.name[-4:] == ".tmp"}
            except OSError:
                names = set()
            _TEMPS_SEEN[folder] = names
        prefix = _temp_prefix(path.name)
        mine = [n for n in names if n.startswith(prefix)]
    for name in mine:
        match = _TEMP_TAIL.fullmatch(name[len(prefix) :])
        if match is None:
            continue
        full = os.path.join(folder, name)
        try:
            if not _is_stale(full, match.group("host"), match.group("pid")):
                continue
            os.unlink(full)
        except FileNotFoundError:
            pass  # its writer finished (or someone else cleaned it)
        except OSError:
            continue  # not ours to remove (permissions): leave it and keep writing
        with _LOCK:
            names.discard(name)


def _is_stale(path: str, host: str | None, pid: str | None) -> bool:
    if host == _HOST and pid is not None and sys.platform != "win32":
        # (os.kill on Windows terminates: there only the age rule is used)
        if not _pid_alive(int(pid)):
            return True
    return time.time() - os.stat(path).st_mtime > STALE_AFTER_S


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without sending). Unsure means alive."""
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, under another user
    return True


# ---------------------------------------------------------------------------------------------
# Signals and folder locks
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While active, SIGTERM raises ``SystemExit(143)`` in the main thread instead of ending
    the process on the spot, so ``finally`` blocks run and a write in progress removes its temp
    file (SIGINT already raises KeyboardInterrupt). Code that handles SIGTERM itself (the
    training loop's graceful stop) installs its own handler inside and restores this one.
    Outside the main thread, where handlers cannot be set, it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class FolderLock:
    """An exclusive lock on ``folder`` (created if needed), held from :meth:`acquire` (or
    ``with``) to :meth:`release`: ``flock`` on ``folder/.lock``, which holds the owner's pid.

    The OS drops the lock when its process ends, killed or not, so there is no stale lock to
    clean up. A second locker gets :class:`~lightsr.errors.FolderInUseError` at once, naming
    the folder, the other pid and ``fix``. Windows has no flock: there the folder is not
    locked. A file system that refuses locks (some network mounts) gives a warning.
    """

    NAME = ".lock"

    def __init__(self, folder: str | os.PathLike, *, fix: str = "or use another folder") -> None:
        self.folder = Path(folder)
        self.fix = fix
        self._fd: int | None = None
        self.acquired = False  # acquire() succeeded (or had nothing to lock with)

    def acquire(self) -> FolderLock:
        if self.acquired:
            return self
        self.acquired = True
        if sys.platform == "win32":
            return self  # no flock on Windows: the folder is not locked
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / self.NAME, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            self.acquired = False
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"pid {holder}" if holder else "pid unknown"
                raise FolderInUseError(
                    f"{str(self.folder)!r} is in use by another process ({who}): wait for it "
                    f"to finish or stop it, {self.fix}."
                ) from None
            warnings.warn(
                f"cannot lock {str(self.folder)!r} ({exc.strerror or exc}); a second process "
                "using it at the same time would not be detected.",
                stacklevel=2,
            )
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        # The lock file stays: removing it would let a process that opened it before the
        # removal and one that creates a new one hold "the" lock at the same time.
        self.acquired = False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


__all__ = [
    "FolderLock",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_unique",
    "check_outputs",
    "numbered",
    "same_file",
    "sigterm_as_exit",
]
