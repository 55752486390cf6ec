"""src/atomic.py at its edges: a live holder is only asked, never signalled; the pids a lock may
name; two processes breaking one stale lock; cleaning what a killed run left is best effort.
(The stage-level lock and swap tests are in tests/test_bad_input.py.)"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.atomic import MAX_PID, atomic_path, clean_stale_temps, lock_path, stage_lock
from src.errors import SuiteError


def write_lock(path: Path, pid: int) -> Path:
    """A lock of output `path` naming `pid` on this host."""
    lock = lock_path(path)
    holder = {
        "pid": pid,
        "host": socket.gethostname(),
        "command": "E1_evaluate.py",
        "started": "then",
    }
    lock.write_text(json.dumps(holder))
    return lock


def exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    code = "import os; print(os.getpid())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout)


def temp_name(target: str, pid: int) -> str:
    """The name our atomic writes give a temporary of `target` written by `pid` on this host."""
    from src.atomic import _HOST

    return f".{target}.~{_HOST}-{pid}-0badc0de.tmp"


def test_a_live_holder_is_asked_not_signalled(tmp_path):
    # Whether the holder lives is asked with signal 0: any other signal would hang it up or kill it.
    code = (  # SIGHUP as a terminal gives it (a run under nohup would ignore it)
        "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_DFL); print('ready', "
        "flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        write_lock(tmp_path / "ds", holder.pid)
        with pytest.raises(SuiteError, match=f"pid {holder.pid} "), stage_lock(tmp_path / "ds"):
            pass
        with pytest.raises(subprocess.TimeoutExpired):
            holder.wait(timeout=1)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("pid", [0, MAX_PID])
def test_a_lock_naming_a_pid_no_process_can_have_names_no_one(tmp_path, pid):
    # pid 0 (kill(0, 0) asks the whole process group: "alive") and pids ≥ pid_max name no holder;
    # a fresh lock that names no one is refused as unnamed, not judged by that pid
    write_lock(tmp_path / "ds", pid)
    with pytest.raises(SuiteError, match="another process \\(unnamed\\)"):
        with stage_lock(tmp_path / "ds"):
            pass
    write_lock(tmp_path / "ds", MAX_PID - 1)  # the largest pid a process can have: judged, dead
    with stage_lock(tmp_path / "ds"):
        pass


def stale_lock_with_breaker(tmp_path: Path, breaker_age: float) -> tuple[Path, Path]:
    """A lock of a process that exited, and the `.break` file of another process breaking it,
    `breaker_age` seconds old."""
    lock = write_lock(tmp_path / "ds", exited_pid())
    breaker = lock.with_name(lock.name + ".break")
    breaker.write_text("")
    t = time.time() - breaker_age
    os.utime(breaker, (t, t))
    return lock, breaker


def test_a_stale_lock_another_process_is_breaking_is_left_to_it(tmp_path, caplog):
    lock, breaker = stale_lock_with_breaker(tmp_path, 0)
    with caplog.at_level(logging.WARNING, "src.atomic"):
        with pytest.raises(SuiteError, match=f"delete {lock}"), stage_lock(tmp_path / "ds"):
            pass
    assert lock.exists() and breaker.exists()
    assert "taking over" not in caplog.text  # nothing was taken over


@pytest.mark.parametrize("raced", [False, True])
def test_a_breaker_killed_a_minute_ago_is_cleared_and_the_lock_taken_over(
    tmp_path, caplog, monkeypatch, raced
):
    lock, breaker = stale_lock_with_breaker(tmp_path, 60.5)
    if raced:  # another process clears the same old breaker at the same moment: no error
        real_unlink = os.unlink

        def unlink(path, *a, **k):
            real_unlink(path, *a, **k)
            if Path(path).name == breaker.name:
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))

        monkeypatch.setattr(os, "unlink", unlink)
    with caplog.at_level(logging.WARNING, "src.atomic"), stage_lock(tmp_path / "ds"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists() and not breaker.exists()
    assert f"taking over the stale lock {lock} of dead process" in caplog.text


def test_a_lock_retaken_while_we_broke_it_is_left_to_its_new_holder(tmp_path, monkeypatch, caplog):
    # Between reading the dead holder and breaking its lock, another process broke it and took
    # it: the new holder's lock stays and we are refused.
    lock = write_lock(tmp_path / "ds", exited_pid())
    real_open = os.open

    def open_(path, flags, *args):
        if str(path).endswith(".break"):  # the other process got there just before us
            write_lock(tmp_path / "ds", os.getppid())
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_)
    with caplog.at_level(logging.WARNING, "src.atomic"):
        with pytest.raises(SuiteError, match=f"delete {lock}"), stage_lock(tmp_path / "ds"):
            pass
    assert json.loads(lock.read_text())["pid"] == os.getppid()
    assert "taking over" not in caplog.text


def test_killed_runs_temporaries_are_removed_with_a_log_line(tmp_path, caplog):
    dead = exited_pid()
    (tmp_path / temp_name("a.csv", dead)).write_text("half")
    (tmp_path / temp_name("run", dead)).mkdir()
    with caplog.at_level(logging.INFO, "src.atomic"):
        removed = clean_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(
        [temp_name("a.csv", dead), temp_name("run", dead)]
    )
    assert list(tmp_path.iterdir()) == []
    assert caplog.messages == [f"removed 2 temporary file(s) of a killed run in {tmp_path}"]


def test_cleaning_a_killed_runs_temporaries_is_best_effort(tmp_path, monkeypatch):
    # On NFS a folder can stay busy (.nfs files) and another run may clean the same folder at
    # once: a temporary that cannot be removed, or is gone already, does not stop the write.
    dead = exited_pid()
    busy = tmp_path / temp_name("run", dead)
    busy.mkdir()
    (busy / "x").write_text("")
    gone = tmp_path / temp_name("a.csv", dead)
    gone.write_text("half")
    real_rmdir, real_unlink = os.rmdir, os.unlink

    def rmdir(path, *a, **k):
        if Path(path).name == busy.name:
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        return real_rmdir(path, *a, **k)

    def unlink(path, *a, **k):
        if Path(path).name == gone.name:  # another cleaner removed it just before us
            real_unlink(path, *a, **k)
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        return real_unlink(path, *a, **k)

    monkeypatch.setattr(os, "rmdir", rmdir)
    monkeypatch.setattr(os, "unlink", unlink)
    with atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text("written")
    monkeypatch.undo()
    assert (tmp_path / "out.txt").read_text() == "written"
    assert busy.exists() and not gone.exists()
    shutil.rmtree(busy)
