"""Files no one else can touch: every folder tri24es makes is 0700 and every file 0600,
whatever the umask, and it never writes through another user's folder or link.

A folder is used only when it, and every folder between it and the project root, belongs to
the user running tri24es and is writable by no one else: then no one else can swap a folder
or plant a link in it after the check. Files are opened with ``O_NOFOLLOW`` inside such
folders, and one found to belong to someone else is refused. The project root itself is the
user's own choice (a shared team folder may well be group-writable) and is not checked.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import glob
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tri24es.errors import Tri24esError


class UnsafeFolder(Tri24esError):
    """A folder or file that someone else could write (or that belongs to someone else):
    tri24es refuses to write into it."""


def _check(path: Path, st: os.stat_result, kind: str) -> None:
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UnsafeFolder(
            f"refusing to use {path}: the {kind} belongs to user id {st.st_uid}, not to you "
            f"({uid}); remove it, or chown it if it is yours")
    if kind == "folder" and st.st_mode & 0o022:
        raise UnsafeFolder(
            f"refusing to use {path}: the folder is writable by others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); `chmod 700 {path}` if nothing in it was "
            "changed by someone else")


def private_folder(folder: Path, root: Path | None = None) -> Path:
    """Make ``folder`` (and its missing parents) 0700, and check it: with ``root``, every
    folder from below ``root`` down to it; else the folder itself. UnsafeFolder if one
    belongs to someone else or others may write it."""
    folder = Path(folder)
    chain = _chain(folder, root)
    passed = _passing(chain)
    if not passed:
        for missing in reversed([p for p in chain[0].parents if not p.exists()]):
            with contextlib.suppress(FileExistsError):  # above what is checked, not by umask
                missing.mkdir(mode=0o700)
    for part in chain[passed:]:
        try:
            part.mkdir(mode=0o700)
            os.chmod(part, 0o700, follow_symlinks=False)  # mkdir's mode is masked by the umask
        except FileExistsError:
            pass
        lst = os.lstat(part)
        _check(part, lst, "link" if stat.S_ISLNK(lst.st_mode) else "folder")
        st = os.stat(part)  # a link of the user's own: what it points to must pass too
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeFolder(f"refusing to use {part}: not a folder")
        _check(part, st, "folder")
    return folder


@functools.lru_cache(maxsize=256)
def _chain(folder: Path, root: Path | None) -> tuple[Path, ...]:
    """The folders ``private_folder`` checks: with ``root``, each from just below it down to
    ``folder``; else ``folder`` alone. Names only (the checks look at the disk each time):
    kept, as working them out with ``pathlib`` cost more than the checks."""
    if root is not None:
        try:
            below = folder.relative_to(root).parts
        except ValueError:
            below = ()
        if below:
            chain, part = [], root
            for name in below:
                part = part / name
                chain.append(part)
            return tuple(chain)
    return (folder,)


def _passing(chain: tuple[Path, ...]) -> int:
    """How many folders at the head of ``chain`` pass ``private_folder``'s checks as they
    are, found with one ``lstat`` each: folders (not links) of this user that no one else
    may write (for a folder that is not a link, ``stat`` says what ``lstat`` said). From
    the first that does not (missing, a link, one to refuse), the full checks make, follow
    or refuse it and say why."""
    uid = os.geteuid()
    for passed, part in enumerate(chain):
        try:
            st = os.lstat(part)
        except OSError:
            return passed
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o022:
            return passed
    return len(chain)


class NotRegularFile(OSError):
    """A path that is there but is no regular file: a FIFO, a device, a folder, a socket."""


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a device"),
             (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a link"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def open_without_waiting(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` that never waits: opening a FIFO waits for the other end, for ever if no
    one comes (a FIFO or a device where a file belongs hung `spend` and the watchdog), and a
    device may never end. The descriptor is returned only for a regular file, blocking again;
    else NotRegularFile, saying what is there."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as e:
        if e.errno == errno.ENXIO:  # a socket, or a FIFO no one reads (opened to write)
            raise NotRegularFile(e.errno, "not a regular file", str(path)) from e
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, f"not a regular file ({_kind(st.st_mode)})",
                                 str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path) -> bytes:
    """The bytes of ``path`` (links followed), a regular file: see ``open_without_waiting``."""
    with os.fdopen(open_without_waiting(path, os.O_RDONLY), "rb") as f:
        return f.read()


def pid_in(pid_file: Path) -> str:
    """The pid a running daemon wrote, or ``?`` (none there, or not a regular file: a FIFO
    put in its place hung the second daemon and `doctor` that read it)."""
    try:
        return read_regular(pid_file).decode(errors="replace").strip() or "?"
    except OSError:
        return "?"


def private_fd(path: Path, flags: int, root: Path | None = None, *,
               folder: bool = True) -> int:
    """Open ``path`` inside a checked private folder (see ``private_folder``; ``folder=False``
    for a path the user named, anywhere: then only the file is checked), without following
    a link, created 0600; UnsafeFolder if the file belongs to someone else. ``flags``:
    os.O_RDONLY, os.O_RDWR, or os.O_WRONLY, with O_CREAT/O_APPEND/O_TRUNC/O_EXCL."""
    path = Path(path)
    if folder and (flags & os.O_CREAT or path.parent.exists()):
        private_folder(path.parent, root)
    try:  # truncated only once it is known to be ours; never waiting on a FIFO's other end
        fd = open_without_waiting(path, flags & ~os.O_TRUNC | os.O_NOFOLLOW)
    except NotRegularFile as e:
        raise UnsafeFolder(f"refusing to open {path}: {e.strerror}") from e
    except OSError as e:
        if e.errno == errno.ELOOP:  # the name is a symbolic link
            raise UnsafeFolder(f"refusing to open {path}: it is a symbolic link") from e
        raise
    try:
        st = os.fstat(fd)
        _check(path, st, "file")
        if stat.S_IMODE(st.st_mode) != 0o600 and flags & (os.O_WRONLY | os.O_RDWR):
            os.fchmod(fd, 0o600)  # made by an older version or by hand: ours alone now
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: Path, flags: int, root: Path | None = None, *,
                 folder: bool = True, buffering: int = -1) -> IO[Any]:
    """``private_fd`` as a binary file object."""
    fd = private_fd(path, flags, root, folder=folder)
    writing = flags & (os.O_WRONLY | os.O_RDWR)
    mode = "ab" if flags & os.O_APPEND else ("wb" if writing else "rb")
    return os.fdopen(fd, mode, buffering=buffering)


def write_private(path: Path, data: bytes, root: Path | None = None) -> None:
    """Write ``data`` to ``path`` whole (replacing what it held), 0600 in a checked 0700
    folder: written beside it, then renamed over it, so a reader (a second watchdog reading
    the pid file, say) sees the old content or the new, never an empty or partial file."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.partial")
    try:
        fd = private_fd(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, root)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


class SpareFile:
    """A private file made ahead of its use: empty, 0600, in a checked folder, its name
    hidden (``.<name>.spare``). ``place`` fills it and renames it over its final name, as
    ``write_private`` would have written it. Creating a file (its inode) is the dearest step
    of writing a small one (~0.2 ms of CPU on ext4 here, where a rename costs 0.02): made
    while nothing waits, it is off the path of whatever needs the file written."""

    def __init__(self, folder: Path, name: str, root: Path | None = None) -> None:
        self.path = SpareFile.path_of(folder, name)
        self._root = root
        private_folder(self.path.parent, root)
        with contextlib.suppress(FileNotFoundError):  # left by an earlier run of its owner
            os.unlink(self.path)
        self._fd: int | None = private_fd(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, root)

    @staticmethod
    def path_of(folder: Path, name: str) -> Path:
        return Path(folder) / f".{name}.spare"

    @staticmethod
    def found(folder: Path, prefix: str) -> Iterator[tuple[str, Path]]:
        """The spares in ``folder`` whose names start with ``prefix``: (the rest of the
        name, the path)."""
        for path in Path(folder).glob(f".{glob.escape(prefix)}*.spare"):
            yield path.name[1 + len(prefix):-len(".spare")], path

    def place(self, path: Path, data: bytes) -> None:
        """Write ``data`` to ``path`` whole, as ``write_private`` does: from this spare if
        it is still there, under its name, in ``path``'s folder (checked again now), else
        afresh. The spare is used up either way."""
        fd, self._fd = self._fd, None
        if fd is None:
            write_private(path, data, self._root)
            return
        try:
            if path.parent != self.path.parent or not _same_file(fd, self.path):
                raise FileNotFoundError(errno.ENOENT, "the spare file was replaced", str(path))
            private_folder(path.parent, self._root)
            _write_all(fd, data)
            os.close(fd)
            fd = None
            os.replace(self.path, path)
        except FileNotFoundError:  # someone took it meanwhile: written afresh
            write_private(path, data, self._root)
        finally:  # (a spare left by a failure is replaced by the next one made)
            if fd is not None:
                os.close(fd)

    def discard(self) -> None:
        """Remove the spare, unused."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):  # not another's made under the same name since
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd`` (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` names the file open on ``fd`` (no link followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_ino, st.st_dev) == (own.st_ino, own.st_dev)
