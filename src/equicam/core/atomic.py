"""Safe writes: the one way equicam puts a file or a folder on disk.

Every file is written to a temporary file in the target folder, flushed to disk (``fsync``)
and then renamed onto its name in one step, so a reader sees the old file or the whole new
one, never half of one. The folder is opened once and every step works relative to that open
folder, so swapping a folder in the path for a symbolic link half-way cannot redirect the
write. Without ``replace`` the rename is ``os.link``, which fails when the name exists: the
check "nothing is there" and the write are one step.

A name that looks like a scan or segmentation of any BraTS layout (``<id>_flair.nii.gz``,
``<id>-t2f.nii.gz``, anything NIfTI in ``imagesTr``/``imagesTs``/``labelsTr``), checked on the
name given and on the file it resolves to through symbolic links, is never written.

A writer holds an ``flock`` on its temporary file (or folder) while it works; a temporary
left by a killed run holds none, and the next write to the same name removes it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from equicam.core.errors import EquicamError

TEMP_SUFFIX = ".equicam-tmp"
_SCAN_SUFFIXES = ("_t1", "_t1ce", "_t2", "_flair", "_seg", "-t1n", "-t1c", "-t2w", "-t2f", "-seg")
_DECATHLON_FOLDERS = ("imagestr", "imagests", "labelstr")
_NIFTI = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)

Content = bytes | str | Callable[[BinaryIO], None]


class SaveError(EquicamError):
    """A file that cannot or must not be written; nothing was changed on disk."""


def scan_reason(path: str | os.PathLike) -> str | None:
    """Why ``path`` looks like a BraTS scan or segmentation (of any layout), or None."""
    path = Path(path)
    match = _NIFTI.match(path.name)
    if match is None:
        return None
    stem = match["stem"].lower()
    for suffix in _SCAN_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return f"its name ends in '{suffix}' like a BraTS scan or segmentation"
    if path.parent.name.lower() in _DECATHLON_FOLDERS:
        return f"it lies in a Decathlon '{path.parent.name}' folder of scans"
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _folder_path(dir_fd: int, folder: Path) -> Path:
    """The real path of an open folder (what it is now, not what its name pointed to)."""
    proc = Path(f"/proc/self/fd/{dir_fd}")
    return Path(os.readlink(proc)) if proc.exists() else folder.resolve()


def _open_folder(folder: Path) -> int:
    try:
        return os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise SaveError(folder, "output folder does not exist") from None
    except NotADirectoryError:
        raise SaveError(folder, "output folder is a file, not a folder") from None
    except OSError as error:
        raise SaveError(folder, f"cannot open the output folder ({error.strerror})") from None


def _check_target(
    dir_fd: int, path: Path, protect: Iterable[str | os.PathLike], replace: bool
) -> None:
    real_folder = _folder_path(dir_fd, path.parent)
    for candidate in (path, real_folder / path.name):
        reason = scan_reason(candidate)
        if reason:
            raise SaveError(path, f"refusing to write: {reason}; choose another name")
    try:
        existing = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    except OSError as error:
        raise SaveError(path, f"cannot check the target ({error.strerror})") from None
    if stat.S_ISDIR(existing.st_mode):
        raise SaveError(path, "cannot write: a folder has this name")
    target = Path(os.path.realpath(real_folder / path.name))
    reason = scan_reason(target)
    if reason:
        raise SaveError(path, f"refusing to write: it points to {target}, and {reason}")
    for protected in protect:
        try:
            if os.path.samefile(target, protected):
                raise SaveError(path, "refusing to overwrite an input scan; choose another name")
        except OSError:
            continue
    if not replace and existing is not None:
        raise SaveError(path, "already exists; nothing was replaced")


def _locked(fd: int) -> bool:
    """Take the writer's lock on ``fd``; False when another live process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def clean_stale(folder: str | os.PathLike, name: str, dir_fd: int | None = None) -> list[str]:
    """Remove the temporaries of ``name`` in ``folder`` that no live writer holds.

    Returns the names removed (temporaries left by a killed or crashed run).
    """
    own = dir_fd is None
    fd = _open_folder(Path(folder)) if own else dir_fd
    removed = []
    try:
        prefix = f".{name}."
        for entry in os.listdir(fd):
            if not (entry.startswith(prefix) and entry.endswith(TEMP_SUFFIX)):
                continue
            try:
                handle = os.open(entry, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                continue
            try:
                if not _locked(handle):
                    continue
                if stat.S_ISDIR(os.fstat(handle).st_mode):
                    shutil.rmtree(Path(folder) / entry, ignore_errors=True)
                else:
                    os.unlink(entry, dir_fd=fd)
                removed.append(entry)
            except OSError:
                continue
            finally:
                os.close(handle)
    finally:
        if own:
            os.close(fd)
    return removed


def _new_temp(dir_fd: int, name: str) -> tuple[str, int]:
    """Create and lock a temporary file; retried if a cleaner removed it before the lock."""
    while True:
        tmp = f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd
        )
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink > 0:
            return tmp, fd
        os.close(fd)


def write_file(
    path: str | os.PathLike,
    content: Content,
    *,
    replace: bool = False,
    protect: Iterable[str | os.PathLike] = (),
) -> Path:
    """Write ``content`` to ``path`` safely (see the module docstring).

    Parameters
    ----------
    path
        The file to write; its folder must exist.
    content
        Bytes, text (UTF-8), or a function that writes to a binary file object.
    replace
        Replace an existing file of that name (never a scan); by default an existing file
        is an error and is left as it was.
    protect
        Files that must never be replaced, e.g. the inputs of the run.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    SaveError
        When the name looks like a scan, the file exists (without ``replace``), or the write
        fails (full disk, no permission); no temporary file is left behind.
    """
    path = Path(path)
    dir_fd = _open_folder(path.parent)
    try:
        protect = list(protect)
        _check_target(dir_fd, path, protect, replace)
        clean_stale(path.parent, path.name, dir_fd)
        try:
            tmp, fd = _new_temp(dir_fd, path.name)
        except OSError as error:
            raise SaveError(
                path.parent, f"cannot write in this folder ({error.strerror})"
            ) from None
        try:
            with os.fdopen(os.dup(fd), "wb") as handle:
                if isinstance(content, str):
                    handle.write(content.encode("utf-8"))
                elif isinstance(content, bytes):
                    handle.write(content)
                else:
                    content(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.fchmod(fd, 0o666 & ~_umask())
            _check_target(dir_fd, path, protect, replace)  # again, just before the rename
            if replace:
                os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            else:
                os.link(
                    tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False
                )
                os.unlink(tmp, dir_fd=dir_fd)
            os.fsync(dir_fd)
        except FileExistsError:
            os.unlink(tmp, dir_fd=dir_fd)
            raise SaveError(
                path, "already exists (written meanwhile); nothing was replaced"
            ) from None
        except OSError as error:
            _unlink_quietly(tmp, dir_fd)
            raise SaveError(path, f"cannot write ({error.strerror or error})") from None
        except BaseException:
            _unlink_quietly(tmp, dir_fd)
            raise
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)
    return path


def _unlink_quietly(name: str, dir_fd: int) -> None:
    with suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def write_json(path: str | os.PathLike, data, *, replace: bool = False) -> Path:
    """:func:`write_file` of ``data`` as indented JSON."""
    return write_file(path, json.dumps(data, indent=2) + "\n", replace=replace)


def numbered(path: str | os.PathLike, number: int) -> Path:
    """``name_<number>.ext`` beside ``path`` (``.nii.gz`` counts as one extension)."""
    path = Path(path)
    match = _NIFTI.match(path.name)
    stem, ext = (
        (match["stem"], path.name[len(match["stem"]) :]) if match else (path.stem, path.suffix)
    )
    return path.with_name(f"{stem}_{number}{ext}")


def new_folder(path: str | os.PathLike) -> Path:
    """Create ``path``, or the first free ``path_2``, ``path_3``... beside it; never reuse one.

    ``mkdir`` fails when the name exists, so two runs at once get two folders.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SaveError(
            path.parent, f"cannot create the output folder ({error.strerror})"
        ) from None
    candidate, number = path, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            number += 1
            candidate = path.with_name(f"{path.name}_{number}")
        except OSError as error:
            raise SaveError(candidate, f"cannot create the folder ({error.strerror})") from None


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` (and the folders themselves) to disk."""
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_folder(Path(root))


@contextmanager
def building(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``target`` in which to build a whole folder.

    Temporaries of ``target`` left by killed runs are removed first. The folder is locked
    while it is built (so a later run's cleaning leaves it alone) and removed on leaving,
    unless :func:`folder_in_place` or :func:`place_new` gave it its name.

    Raises
    ------
    SaveError
        When the folder cannot be made or written (the files named, nothing left behind).
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SaveError(
            target.parent, f"cannot create the output folder ({error.strerror})"
        ) from None
    clean_stale(target.parent, target.name)
    while True:
        work = target.parent / f".{target.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            work.mkdir()
        except OSError as error:
            raise SaveError(target.parent, f"cannot write here ({error.strerror})") from None
        lock = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if work.exists() and os.stat(work).st_ino == os.fstat(lock).st_ino:
            break
        os.close(lock)
    try:
        yield work
    except EquicamError as error:
        if not error.path.is_relative_to(work):
            raise
        # the file's name where the user will look for it, not the temporary's
        raise SaveError(target / error.path.relative_to(work), error.problem) from None
    except OSError as error:
        raise SaveError(target, f"cannot write ({error.strerror or error})") from None
    finally:
        os.close(lock)
        shutil.rmtree(work, ignore_errors=True)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def folder_in_place(target: str | os.PathLike) -> Iterator[Path]:
    """Build a whole folder beside ``target`` and give it that name in one step.

    Yields a temporary folder (see :func:`building`). On success it is flushed to disk and
    renamed to ``target``, which must not exist or be empty: a target that holds anything is
    never replaced.

    Raises
    ------
    SaveError
        When ``target`` already holds files (checked before and, atomically, at the rename).
    """
    target = Path(target)
    if target.is_dir() and any(target.iterdir()):
        raise SaveError(target, "already holds files; choose a new or empty folder")
    if target.exists() and not target.is_dir():
        raise SaveError(target, "is a file, not a folder")
    with building(target) as work:
        yield work
        fsync_tree(work)
        try:
            os.rename(work, target)
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise SaveError(target, "was filled meanwhile; nothing was replaced") from None
            raise SaveError(target, f"cannot write ({error.strerror})") from None
        _fsync_folder(target.parent)


def place_new(work: Path, path: str | os.PathLike) -> Path:
    """Give ``work`` (a folder from :func:`building` of ``path``) the first free name among
    ``path``, ``path_2``...; returns that name.

    The name is reserved by :func:`new_folder` (so two runs never share one) and ``work``,
    flushed to disk, is renamed onto it in one step: a killed or failed run leaves no half
    folder under any of these names.
    """
    fsync_tree(work)
    final = new_folder(path)
    try:
        os.rename(work, final)  # onto the empty folder this call just made
    except OSError as error:
        with suppress(OSError):
            final.rmdir()
        raise SaveError(final, f"cannot write ({error.strerror})") from None
    _fsync_folder(final.parent)
    return final
