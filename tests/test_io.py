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
        except Exception as err:  # noqa: BLE001  (any failure is the finding)
            errors.append(err)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (
        errors == []
        and target.read_text().startswith("writer ")
        and os.listdir(tmp_path) == ["same.json"]
    )


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
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 and out.strip() == "done" for p, (out, _) in zip(procs, outs)), (
        outs
    )
    assert target.read_text() == "x" * 10000 and os.listdir(tmp_path) == ["shared.graph"]


def test_a_full_disk_or_a_refused_folder_leaves_the_old_file_and_no_temporary(
    tmp_path, monkeypatch
):
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


def _special_files(tmp_path):
    """A FIFO and (where this user may make one) a character device like /dev/null, made in tmp_path."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    out = {"a FIFO": fifo}
    try:
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        out["a device"] = tmp_path / "null"
    except (PermissionError, OSError):
        pass
    return out


def test_a_special_file_or_a_symlink_is_refused_and_left_as_it_was(tmp_path):
    for kind, path in _special_files(tmp_path).items():
        before = os.lstat(path).st_mode
        with pytest.raises(ValueError, match=f"it exists and is {kind}, not a regular file"):
            write_text(path, "x")
        assert os.lstat(path).st_mode == before
    victim = tmp_path / "victim"
    victim.write_text("mine")
    (tmp_path / "link").symlink_to(victim)
    with pytest.raises(ValueError, match="is a symlink"):
        write_text(tmp_path / "link", "x")
    assert victim.read_text() == "mine" and (tmp_path / "link").is_symlink()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_set_of_outputs_is_written_all_or_nothing(tmp_path):
    from attribution_nb.io import atomic_paths

    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")
    with pytest.raises(OSError), atomic_paths(a, b) as (ta, tb):
        with open(ta, "w") as f:
            f.write("new a")
        raise OSError(28, "No space left on device")  # the second file fails to write
    assert (a.read_text(), b.read_text()) == ("old a", "old b") and sorted(
        os.listdir(tmp_path)
    ) == ["a.txt", "b.txt"]
    with pytest.raises(ValueError, match="two outputs name the same file"):
        with atomic_paths(a, tmp_path / "." / "a.txt"):
            pass


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_safetensors_files_get_the_mode_a_plain_write_gives(tmp_path, umask):
    """(safetensors' save_file replaces the file it is given: the mode is set after it has written)"""
    from attribution_nb.io import save_safetensors
    import torch

    old = os.umask(umask)
    try:
        save_safetensors({"x": torch.zeros(3)}, tmp_path / "new.st")
        assert stat.S_IMODE(os.stat(tmp_path / "new.st").st_mode) == 0o666 & ~umask
        os.chmod(tmp_path / "new.st", 0o640)
        save_safetensors({"x": torch.ones(3)}, tmp_path / "new.st")
        assert stat.S_IMODE(os.stat(tmp_path / "new.st").st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_killed_writer_s_temporary_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "g.json"
    script = f"""
import os, time
from attribution_nb.io import atomic_path
with atomic_path({str(target)!r}) as tmp:
    open(tmp, "w").write("partial")
    print("writing", flush=True)
    time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()  # kill -9: no cleanup can run
    proc.wait(timeout=30)
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")], (
        "the killed writer should have left its file"
    )
    write_text(target, "done")
    assert os.listdir(tmp_path) == ["g.json"] and target.read_text() == "done"


def test_text_utf8_cannot_encode_is_refused_by_name(tmp_path):
    with pytest.raises(
        ValueError, match=r"holds '\\ud800' at character 2, which UTF-8 cannot encode"
    ):
        write_text(tmp_path / "x.json", "ab\ud800")
    assert os.listdir(tmp_path) == []
