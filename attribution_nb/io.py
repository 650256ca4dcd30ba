"""Files: safetensors reading (as torch tensors or numpy arrays) and atomic writes.

Every file the package reads is safetensors, JSON or ``.npz`` read with
``allow_pickle=False``: nothing is ever unpickled.  Every file it writes goes to a temporary
file beside the target, then replaces it in one ``os.replace``, so an interrupted write never
leaves a half-written file under the real name.

``safetensors`` is imported inside the functions on purpose: remote requests carry this
package's code by value, and its Rust extension must not become a module global they pull.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterator

import numpy as np
import torch


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file, with a clear error for a bad file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        size = os.path.getsize(path)
        raise ValueError(
            f"{path} is not a readable safetensors file ({size} bytes; corrupt or truncated?): {err}"
        ) from None
    return tensors, meta


_NUMPY_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors_numpy(
    path: str | os.PathLike, *, require: str | None = None, what: str = "file"
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Like :func:`read_safetensors`, as numpy arrays read straight from the file (no memory
    map, no second copy: peak memory is the arrays themselves).

    The header is checked before any tensor is read: every entry's dtype, shape and offsets
    (inside the data region, sized as declared, not overlapping another).  With ``require``, a
    file whose metadata lacks that key is refused before reading any tensor (``what`` names
    the kind of file expected).
    """
    path, n, meta, layout = _checked_header(path)
    if require is not None and require not in meta:
        raise ValueError(f"{path} is a safetensors file but not an {what}")
    with open(path, "rb") as f:
        arrays: dict[str, np.ndarray] = {}
        for key, (dtype, shape, begin, count) in layout.items():
            f.seek(8 + n + begin)
            arrays[key] = np.fromfile(f, dtype=dtype, count=count).reshape(shape)
    return arrays, meta


class _DtypeNotRead(ValueError):
    """A tensor's dtype that numpy cannot hold (bfloat16)."""


def _checked_header(path: str | os.PathLike) -> tuple[str, int, dict, dict]:
    """``(path, header length, metadata, layout)`` of a safetensors file, every entry checked,
    with an error that names the file and what is wrong."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    size = os.path.getsize(path)

    def bad(why: str, cls=ValueError) -> ValueError:
        return cls(
            f"{path} is not a readable safetensors file ({size} bytes; corrupt or truncated?): {why}"
        )

    with open(path, "rb") as f:
        return (path, *_read_header(f, size, bad))


def _read_header(f, size: int, bad) -> tuple[int, dict, dict]:
    """``(header length, metadata, layout)`` of an open safetensors file, every entry checked."""
    head = f.read(8)
    n = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 0 < n <= min(size - 8, 1 << 28):
        raise bad("bad header length")
    try:
        header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise bad(f"header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("__metadata__ is not a map of strings")
    return n, meta, _layout(header, size - 8 - n, bad)


#: safetensors files at least this large are memory-mapped by :meth:`Transcoder.load` (``mmap=None``)
MAP_FROM_BYTES = 64 << 20


def map_safetensors(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, str], mmap.mmap | None]:
    """Like :func:`read_safetensors`, but every tensor is a view of one copy-on-write memory map of
    the file: nothing is read until used, a part read (decoder rows) costs only its pages, and
    :func:`drop_pages` gives the pages back (they are read again from the file when next used).
    Writing to a tensor changes this process's copy only, never the file.  Returns the tensors, the
    metadata and the map; a file holding a dtype numpy cannot map (bfloat16) is read into memory
    instead (and the map is None)."""
    try:
        path, n, meta, layout = _checked_header(path)
    except _DtypeNotRead:
        return (*read_safetensors(path), None)
    with open(path, "rb") as f:
        whole = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    tensors = {}
    for key, (dtype, shape, begin, count) in layout.items():
        start = 8 + n + begin
        array = np.frombuffer(whole, dtype=dtype, count=count, offset=start).reshape(shape)
        if count == 0 or start % np.dtype(dtype).itemsize:  # empty, or unaligned: a copy
            array = array.copy()
        tensors[key] = torch.from_numpy(array)
    return tensors, meta, whole


def _written_span(start: int, length: int) -> bool | None:
    """Whether any page of the address span [start, start + length) holds this process's own data
    rather than a file's, from ``/proc/self/pagemap``: a present page that is not a file page (a
    written page of a private map, or anonymous memory), or a swapped one.  None where that cannot
    be read (not Linux)."""
    page = mmap.PAGESIZE
    first, n = start // page, (start + length + page - 1) // page - start // page
    try:
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(first * 8)
            entries = np.frombuffer(f.read(n * 8), dtype=np.uint64)
    except OSError:
        return None
    if len(entries) != n:
        return None
    present, swapped, file_page = ((entries >> np.uint64(b)) & np.uint64(1) for b in (63, 62, 61))
    return bool(((present & (file_page ^ np.uint64(1))) | swapped).any())


def _written(whole: mmap.mmap) -> bool | None:
    """Whether any page of a private map was written (see :func:`_written_span`)."""
    start = np.frombuffer(whole, dtype=np.uint8, count=1).ctypes.data
    return _written_span(start, len(whole))


def drop_pages(whole: mmap.mmap | None) -> bool:
    """Give the pages of a :func:`map_safetensors` map back to the system (its tensors stay valid:
    their pages are read from the file again when next used).  Nothing is dropped once a tensor of
    the map was written to (the change would be lost) or where that cannot be told (not Linux).
    Returns whether the pages were given back."""
    if whole is None or len(whole) == 0 or _written(whole) is not False:
        return False
    whole.madvise(mmap.MADV_DONTNEED)
    return True


def drop_file_pages(tensors) -> int:
    """Give back the resident pages of CPU tensors whose memory is a file's pages, unwritten (a
    model's weights memory-mapped from its safetensors file): they are read from the file (most
    often from the page cache) when next used.  A tensor with any page of its own data (anonymous
    memory, a page written in place, a swapped page) is left alone, and so is everything where
    pages cannot be checked (not Linux).  Returns the bytes given back."""
    try:
        import ctypes

        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page, done = mmap.PAGESIZE, 0
    for t in tensors:
        if t.device.type != "cpu" or t.numel() == 0:
            continue
        start, length = t.data_ptr(), t.numel() * t.element_size()
        # whole pages inside the tensor only: a page it shares with a neighbour stays
        lo, hi = -(-start // page) * page, (start + length) // page * page
        if hi <= lo or _written_span(lo, hi - lo) is not False:
            continue
        if madvise(lo, hi - lo, mmap.MADV_DONTNEED) == 0:
            done += hi - lo
    return done


def _layout(header: dict, data_size: int, bad) -> dict[str, tuple]:
    """``{name: (dtype, shape, begin, count)}`` from a header, every entry checked."""
    layout, spans = {}, []
    for key, info in header.items():
        if not isinstance(info, dict):
            raise bad(f"tensor {key!r} has no description")
        dtype = _NUMPY_DTYPES.get(str(info.get("dtype")))
        if dtype is None:
            raise bad(
                f"tensor {key!r} has dtype {info.get('dtype')!r}, which this reader does not handle",
                _DtypeNotRead,
            )
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (
            isinstance(shape, list)
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape)
        ):
            raise bad(f"tensor {key!r} has shape {shape!r}")
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in offsets)
        ):
            raise bad(f"tensor {key!r} has data_offsets {offsets!r}")
        begin, end = offsets
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= begin <= end <= data_size or end - begin != count * np.dtype(dtype).itemsize:
            raise bad(
                f"tensor {key!r} runs past the end of the file or is not the size its shape says"
            )
        layout[key] = (dtype, shape, begin, count)
        spans.append((begin, end, key))
    spans.sort()
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise bad(f"tensors {a!r} and {b!r} overlap")
    return layout


def read_json(path: str | os.PathLike, what: str = "JSON file") -> dict:
    """A JSON object from ``path``, with an error that names the file when it is not one."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable {what} ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {what} must hold a JSON object, got {type(data).__name__}")
    return data


def check_target(path: str | os.PathLike) -> str:
    """``path`` as a string if a writer may replace it: absent, or a regular file.

    A directory, a symlink (it would be replaced, not followed: say which file you mean), a
    device such as ``/dev/null`` or ``/dev/stdout``, a FIFO or a socket is refused by name: the
    atomic replace would turn it into a regular file.  A missing folder is named too.
    """
    path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise ValueError(f"a file path must be a non-empty string, got {path!r}")
    if "\0" in path:
        raise ValueError(f"a file path cannot hold a NUL character, got {path!r}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"cannot write {path}: its folder {folder} does not exist"
            ) from None
        return path
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"cannot write {path}: it is a directory")
    if stat.S_ISLNK(st.st_mode):
        raise ValueError(
            f"refusing to write {path}: it is a symlink (to {os.readlink(path)!r}), which a save would replace "
            f"rather than follow; remove it, or pass the file it points to"
        )
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO"
            if stat.S_ISFIFO(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "a device"
        )
        raise ValueError(
            f"refusing to write {path}: it exists and is {kind}, not a regular file "
            f"(a save replaces the file it is given); choose a file path"
        )
    return path


def check_targets(*paths: str | os.PathLike) -> tuple[str, ...]:
    """Every path checked by :func:`check_target`, and no two naming one file; nothing is written."""
    checked = tuple(check_target(p) for p in paths)
    real = [os.path.realpath(p) for p in checked]
    for i, r in enumerate(real):
        if r in real[:i]:
            raise ValueError(
                f"two outputs name the same file: {checked[real.index(r)]!r} and {checked[i]!r}"
            )
    return checked


def _tag() -> str:
    """This process's mark in temporary names: host and pid, so a later writer can tell a dead one's leftovers."""
    host = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]
    return f"{host}-{os.getpid()}"


def _remove_stale(folder: str, base: str) -> None:
    """Remove temporary files that a killed writer on this host left for ``base`` (its pid no longer runs)."""
    host = _tag().split("-")[0]
    pattern = re.compile(rf"^\.{re.escape(base)}\.{host}-(\d+)\.[^.]+\.tmp$")
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            m = pattern.match(name)
            if m is None or int(m.group(1)) == os.getpid():
                continue
            try:
                os.kill(int(m.group(1)), 0)
            except ProcessLookupError:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))
            except (PermissionError, OverflowError):
                pass


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[str]]:
    """Temporary paths beside ``paths`` to write to, replacing them as one set.

    Every target is checked first (:func:`check_target`; two names for one file are refused).
    Only when every temporary file is written does each get its mode (the existing file's, else
    what the umask gives a new file), get synced, and replace its target, so a failure while
    writing (a full disk, an exception, Ctrl-C) leaves every target as it was and removes every
    temporary file.  Temporary names are unique and created exclusively; ones a killed writer
    left (``kill -9``) are removed by the next write of the same file.
    """
    paths = check_targets(*paths)
    tmps: list[str] = []
    try:
        for p in paths:
            folder, base = os.path.dirname(os.path.abspath(p)), os.path.basename(p)
            _remove_stale(folder, base)
            fd, tmp = tempfile.mkstemp(prefix=f".{base}.{_tag()}.", suffix=".tmp", dir=folder)
            os.close(fd)
            tmps.append(tmp)
        yield list(tmps)
        for p, tmp in zip(paths, tmps):
            check_target(p)  # (nothing planted meanwhile)
            os.chmod(tmp, os.stat(p).st_mode & 0o7777 if os.path.isfile(p) else 0o666 & ~_umask())
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        for p, tmp in zip(paths, tmps):
            os.replace(tmp, p)
    except BaseException:
        for tmp in tmps:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """One temporary path beside ``path`` that replaces it on success (see :func:`atomic_paths`)."""
    with atomic_paths(path) as (tmp,):
        yield tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def encodable(text: str, what: str) -> str:
    """``text`` if UTF-8 can encode it, else a ``ValueError`` naming ``what`` and the first bad character."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{what} holds {text[err.start]!r} at character {err.start}, which UTF-8 cannot encode "
            f"(a lone surrogate)"
        ) from None
    return text


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    data = encodable(text, f"the text for {os.fspath(path)}").encode("utf-8")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def save_safetensors(
    tensors: dict[str, torch.Tensor],
    path: str | os.PathLike,
    metadata: dict[str, str] | None = None,
) -> None:
    """Write ``tensors`` (and string ``metadata``) to one safetensors file atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
