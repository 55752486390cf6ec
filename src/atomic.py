"""Atomic artifacts: temporary names, stage locks and whole-folder swaps.

Every file is written to a temporary name beside its destination and renamed into place; a stage's
output folder (or file set) is built aside and swapped in whole, under a lock that refuses a second
writer. So an interrupted or failed stage never leaves a half-written or mixed artifact, and the
next run of the stage removes what a killed one left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from src.errors import SuiteError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Atomic writes


_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]  # temp names carry host+pid
_TEMP = re.compile(r"^\.(?P<name>.+)\.~(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[0-9a-z]+\.tmp$")


def _temp_name(path: Path) -> Path:
    """A fresh temporary name beside `path` that says which process (host, pid) writes it."""
    return path.with_name(f".{path.name}.~{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def clean_stale_temps(folder: str | Path, owned: str | None = None, before: float | None = None):
    """Remove temporaries our atomic helpers left in `folder` when their writer was killed.

    Only names of the form `.<name>.~<host>-<pid>-<rand>.tmp` are touched, and only when the
    writing process is dead on this host (a live pid, or another host's, is a concurrent writer).
    Under the lock of output `owned`, any temporary of `owned` older than the lock (`before`)
    is also stale: the lock proves its writer is gone (this covers other hosts and the older
    `.<name>.XXXX.tmp` names).
    """
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:  # missing or unreadable: nothing of ours to clean
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        dead = bool(m) and m["host"] == _HOST and not _pid_alive(int(m["pid"]))
        ours_before = (
            owned is not None
            and before is not None
            and p.name.startswith(f".{owned}.")
            and p.name.endswith(".tmp")
            and p.lstat().st_mtime < before
        )
        if dead or ours_before:
            _remove(p)
            removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) of a killed run in %s", len(removed), folder)
    return removed


# ---------------------------------------------------------------------------------------------
# Locks: one writer per output


def lock_path(path: str | Path) -> Path:
    """The lock file of an output (file or folder): `.<name>.lock` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


MAX_PID = 1 << 22  # Linux's pid_max ceiling: a larger "pid" cannot be a process


def _lock_holder(lock: Path) -> dict:
    """Who holds `lock` (pid, host, command, started), or {} when the file does not say: empty,
    unreadable, or anything but our JSON object (a lock edited or damaged by hand)."""
    try:
        holder = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(holder, dict):
        return {}
    pid = holder.get("pid")  # only a pid a process can have (bool is an int: refused too)
    ok_pid = isinstance(pid, int) and not isinstance(pid, bool) and 0 < pid < MAX_PID
    if not ok_pid or not isinstance(holder.get("host"), str):
        return {}
    return holder


@contextlib.contextmanager
def stage_lock(path: str | Path) -> Iterator[Path]:
    """Hold `.<name>.lock` beside output `path` while a stage writes it; a second writer is refused.

    The lock file (created with O_EXCL, so exactly one process wins) records pid, host and
    command. A lock left by a process that died on this host is taken over with a warning; one
    from another host must be deleted by hand (we cannot tell whether its writer still runs).
    """
    path = Path(path).absolute()
    lock = lock_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            break
        except FileExistsError:
            holder = _lock_holder(lock)
            pid, host = holder.get("pid"), holder.get("host")
            stale = (host == me["host"] and isinstance(pid, int) and not _pid_alive(pid)) or (
                not holder and _age(lock) > 60  # killed while filling it, or damaged: says no one
            )
            if attempt == 0 and stale and _break_lock(lock, holder):
                log.warning("taking over the stale lock %s of dead process %s", lock, pid)
                continue
            who = f"pid {pid} on {host} ({holder.get('command', '?')}, since {holder.get('started', '?')})"
            raise SuiteError(
                f"{path} is being written by {who if holder else 'another process (unnamed)'}: wait for it "
                f"to finish; if that process is gone, delete {lock}"
            ) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(me, f)
    except BaseException:  # e.g. a full disk: leave no empty lock behind
        lock.unlink(missing_ok=True)
        raise
    since = lock.stat().st_mtime
    try:
        clean_stale_temps(path.parent, owned=path.name, before=since)
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def _age(p: Path) -> float:
    try:
        return time.time() - p.stat().st_mtime
    except OSError:
        return 0.0


def _break_lock(lock: Path, holder: dict) -> bool:
    """Remove a stale lock, unless another process is breaking it right now (or re-took it)."""
    breaker = lock.with_name(lock.name + ".break")
    if _age(breaker) > 60:  # a breaker killed mid-way
        breaker.unlink(missing_ok=True)
    try:
        os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        return False
    try:
        if _lock_holder(lock) != holder:  # someone took it over meanwhile
            return False
        lock.unlink(missing_ok=True)
        return True
    finally:
        breaker.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# Atomic writes


FULL_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a write that did not fit


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent)
    tmp_path = _temp_name(path)
    os.close(os.open(tmp_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask's mode
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, path)
        except IsADirectoryError:  # it would name the temporary: name the folder in the way
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path)) from None
    except OSError as e:
        if e.errno in FULL_DISK and e.filename is None:  # a write says not where: name the file
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def restore_swap(path: str | Path) -> None:
    """Repair what a swap_dir killed between its two renames left: the old folder put back when
    `path` is missing (the last whole one), else removed. Call under path's lock."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_symlink() or old.exists():
        if path.exists():
            _remove(old)  # a link (left by older versions) is unlinked, its target kept
        else:  # killed between the two renames: the old folder is the last whole one
            os.replace(old, path)
            log.warning("restored %s, left aside by a run killed while swapping", path)


@contextlib.contextmanager
def atomic_dir(path: str | Path, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield a fresh folder beside `path`; it replaces `path` as a whole only if the block succeeds.

    Holds the output's lock (stage_lock) throughout. Until the new folder is complete the old one
    is untouched; the swap is two renames (old → `.<name>.old`, new → path) and the old folder is
    removed after. A run killed between the two renames is repaired by the next one (the old
    folder is put back). Entries named in `keep` (another stage's files, e.g. E2's figures/) are
    hard-linked from the old folder into the new one before the swap.
    """
    path = Path(path)
    with stage_lock(path):
        restore_swap(path)
        tmp = _temp_name(path)
        os.mkdir(tmp)  # 0o777 & ~umask, unlike mkdtemp's 0700
        try:
            yield tmp
            for name in keep:
                src = path / name
                if src.exists() and not (tmp / name).exists():
                    if src.is_dir():
                        shutil.copytree(src, tmp / name, copy_function=os.link)
                    else:
                        os.link(src, tmp / name)
            swap_dir(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def swap_dir(new: str | Path, path: str | Path) -> None:
    """Put the finished folder `new` in the place of folder `path` (same file system): two renames
    (old → `.<name>.old`, new → path), then the old folder is removed. Call under path's lock
    (stage_lock); a run killed between the renames is repaired by atomic_dir or `restore_swap`."""
    new, path = Path(new), Path(path)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)


def write_once(path: str | Path, text: str) -> str:
    """Create file `path` holding `text` unless it exists; return what `path` holds. Race-free:
    the file appears whole (a hard link of a finished temporary), and of several processes
    writing at once exactly one wins and all read the winner's text."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    try:
        tmp.write_text(text, encoding="utf-8")
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text(encoding="utf-8")


@contextlib.contextmanager
def new_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh folder beside `path`; it becomes `path` in one rename only if the block
    succeeds. No lock: when `path` appeared meanwhile (another writer of the same content, e.g.
    two launches of one C1 partition), that one is kept and ours dropped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(path)
    os.mkdir(tmp)
    try:
        yield tmp
        try:
            os.rename(tmp, path)  # fails on an existing non-empty folder: never replaces one
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_files(folder: str | Path, names: list[str] | tuple[str, ...]) -> Iterator[Path]:
    """Build a stage's set of files (`names`, in a folder other stages also write) aside, then
    move them all into `folder`: on failure none changes; on success every name is the new
    file, and a name the block did not produce is removed (no stale file from an earlier run).

    Use inside stage_lock of the output (the lock makes the short run of renames exclusive).
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(folder)
    tmp = _temp_name(folder / "files")
    os.mkdir(tmp)
    try:
        yield tmp
        for name in names:
            if (tmp / name).exists():
                os.replace(tmp / name, folder / name)
            else:
                (folder / name).unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:  # a first run that failed leaves no empty folder (rmdir: only if empty)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
