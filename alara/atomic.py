"""Plumbing every command shares to write files: one atomic writer and one advisory lock.

:func:`atomic_file` writes under a temporary name in the target's own directory, flushes
and fsyncs the file, moves it into place with ``os.replace`` (atomic on POSIX and Windows)
and fsyncs the directory, so a crash, a kill or a full disk never leaves a half-written
file under a final name and never damages the file it would replace.  An OS error while
writing (``ENOSPC``, ``EDQUOT``, ``EIO``...) becomes a :class:`WriteError`: one line naming
the path and saying that the file that was there is intact.

:class:`DirectoryLock` is an exclusive, non-blocking ``flock`` on a lock file in a folder
(data sets and run folders); a second writer is refused with one line naming the holder's
process id.

This is a leaf module (nothing from ``alara`` is imported), so training, evaluation, the
experiment and the data writers all use it without reaching into one another.
"""

from __future__ import annotations

import errno
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Union

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; writers are not protected from each other
    fcntl = None  # type: ignore[assignment]

__all__ = ["atomic_file", "write_bytes", "write_text", "fsync_dir", "WriteError", "LockedError",
           "DirectoryLock", "LOCK_FILE", "RUN_LOCK_FILE", "umask"]

PathLike = Union[str, Path]

#: Lock file a data-set writer holds in the output directory.
LOCK_FILE = ".alara-write.lock"
#: Lock file a command writing a run folder (train, evaluate, experiment) holds in it.
RUN_LOCK_FILE = ".alara-run.lock"


class WriteError(OSError):
    """An OS error while writing a file, with a message that names the file and what was
    left intact (``errno`` is the original error's, e.g. ``errno.ENOSPC``)."""

    def __init__(self, err: Optional[int], message: str) -> None:
        super().__init__(err, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class LockedError(ValueError):
    """Another process holds the lock of a folder this command would write."""


def umask() -> int:
    """The process's umask (read without changing it for longer than one call)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(d: PathLike) -> None:
    """Flush a directory's entries (a rename into it) to disk, where the platform can."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # not possible on every platform (Windows); the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    # Writers (h5py, savefig, np.savez) close their own handles; reopen to flush the data
    # to disk before the rename makes the file visible under its final name.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _describe_failure(path: Path, existed: bool, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += " (free some space or write elsewhere)"
    kept = f"the previous {path.name} is intact" if existed else f"{path.name} was not created"
    return f"{path}: cannot write ({reason}); {kept} and no partial file was left"


@contextmanager
def atomic_file(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, fsync it and move
    it to ``path`` (then fsync the directory).

    On any exception (``KeyboardInterrupt`` included) the temporary file is deleted, so
    ``path`` is either untouched or complete; an ``OSError`` while writing is re-raised as
    a :class:`WriteError` naming ``path`` and what was left intact.
    """
    if path is None or not str(path).strip():
        raise ValueError("output file is empty; give the name of a file to write")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory; give the name of a file to write",
                                str(path))
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "is a file, so nothing can be written "
                                         "below it; choose another path", str(parent))
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    # mkstemp makes the file private (0600); give the result the permissions any newly
    # created file would get, so shared data sets and runs stay readable by the group.
    os.chmod(tmp, 0o666 & ~umask())
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except WriteError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, (IsADirectoryError, NotADirectoryError, FileNotFoundError)) and exc.filename \
                and Path(exc.filename) != tmp:
            raise  # about another path: its own message names it
        raise WriteError(exc.errno, _describe_failure(path, existed, exc)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data):]


def write_bytes(path: PathLike, data: Union[bytes, bytearray, memoryview]) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            _write_all(fd, memoryview(data).cast("B"))
        finally:
            os.close(fd)
    return Path(path)


def write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`)."""
    return write_bytes(path, text.encode(encoding))


class DirectoryLock:
    """An exclusive, non-blocking ``flock`` on ``root / name``.

    The file holds the holder's process id and is removed on release; an opener that
    raced with the removal locks a deleted inode, so it checks after locking that the path
    still names its file and retries.  The kernel drops the lock when the holder dies, so
    a killed writer never leaves a folder locked.
    """

    def __init__(self, root: PathLike, name: str = LOCK_FILE, what: str = "written") -> None:
        self.path = Path(root) / name
        self.what = what
        self._fd: Optional[int] = None

    def acquire(self) -> None:
        """Take the lock; :class:`LockedError` naming the holder when another process has it."""
        if fcntl is None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LockedError(
                        f"{self.path.parent} is being {self.what} by another alara process "
                        f"({self._holder()}holds {self.path}); wait for it to finish or "
                        f"write to another directory") from None
                # A file system without locks (some network mounts): write unprotected.
                warnings.warn(f"cannot lock {self.path} ({exc.strerror}); another writer "
                              f"into this directory would not be refused", stacklevel=3)
                return
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return ""
        return f"pid {pid} " if pid.isdigit() else ""

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing releases the lock
            self._fd = None

    def __enter__(self) -> "DirectoryLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
