"""The atomic writer every file of the package goes through: a unique temporary file beside the
target, synced, renamed; nothing left behind on failure; modes as a plain write would give."""

import os
import signal
import stat
import subprocess
import sys
import threading

import pytest

from attribution_nb.io import atomic_path, write_text


def test_writes_replace_the_target_and_leave_nothing_else(tmp_path):
    target = tmp_path / "out.json"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two" and os.listdir(tmp_path) == ["out.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    target = tmp_path / "out.json"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        with open(tmp, "w") as f:
            f.write("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.json"]


def test_a_planted_symlink_at_the_old_temporary_name_is_not_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("untouched")
    (tmp_path / "out.json.tmp").symlink_to(elsewhere)
    write_text(tmp_path / "out.json", "new")
    assert elsewhere.read_text() == "untouched" and (tmp_path / "out.json").read_text() == "new"


def test_a_directory_target_or_a_missing_folder_is_named(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="d: it is a directory"):
        write_text(tmp_path / "d", "x")
    with pytest.raises(FileNotFoundError, match="its folder .*nope does not exist"):
        write_text(tmp_path / "nope" / "x.json", "x")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_gives_a_permission_error_and_no_file(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            write_text(folder / "x.json", "x")
    finally:
        folder.chmod(0o700)
    assert os.listdir(folder) == []


@pytest.mark.parametrize("umask", [0o002, 0o022])
def test_a_new_file_gets_the_umask_mode_and_an_existing_one_keeps_its_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "new.json", "x")
        assert stat.S_IMODE(os.stat(tmp_path / "new.json").st_mode) == 0o666 & ~umask
        (tmp_path / "kept.json").write_text("x")
        os.chmod(tmp_path / "kept.json", 0o640)
        write_text(tmp_path / "kept.json", "y")
        assert stat.S_IMODE(os.stat(tmp_path / "kept.json").st_mode) == 0o640
    finally:
        os.umask(old)


def test_concurrent_writers_never_collide(tmp_path):
    target, errors = tmp_path / "same.json", []

    def write(i):
        try:
            for _ in range(50):
                write_text(target, f"writer {i}")
        except Exception as err:          # noqa: BLE001  (any failure is the finding)
            errors.append(err)
    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and target.read_text().startswith("writer ") and os.listdir(tmp_path) == ["same.json"]


def test_sigint_mid_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "g.json"
    write_text(target, "old")
    script = f"""
import os, signal, sys, time
from attribution_nb.io import atomic_path
with atomic_path({str(target)!r}) as tmp:
    with open(tmp, "w") as f:
        f.write("partial")
    print("writing", flush=True)
    time.sleep(30)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert proc.returncode != 0
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["g.json"]


def test_two_processes_writing_the_same_file_never_collide(tmp_path):
    target = tmp_path / "shared.graph"
    script = f"""
from attribution_nb.io import write_text
for i in range(200):
    write_text({str(target)!r}, "x" * 10000)
print("done")
"""
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 and out.strip() == "done" for p, (out, _) in zip(procs, outs)), outs
    assert target.read_text() == "x" * 10000 and os.listdir(tmp_path) == ["shared.graph"]


def test_a_full_disk_or_a_refused_folder_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    """(Simulated: these tests also run as root, where a read-only folder does not refuse.)"""
    import errno
    import tempfile

    from attribution_nb import io
    target = tmp_path / "g.json"
    write_text(target, "old")
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).endswith(".tmp"):
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return f
    monkeypatch.setattr("builtins.open", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["g.json"]

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))
    monkeypatch.setattr(io.tempfile, "mkstemp", refused)
    with pytest.raises(PermissionError):
        write_text(target, "new")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["g.json"]
    assert tempfile.mkstemp is refused
