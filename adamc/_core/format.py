"""The checkpoint file format: an optimizer's snapshot (``Optimizer._export()``) as an
``.npz`` file of arrays plus JSON meta data, and back.

The layer between the optimizers and their two users, :mod:`adamc.checkpoint`
(``save``/``load``) and :mod:`adamc.distributed` (collective saves): neither imports
the other.
"""
from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
import zipfile
import zlib
from pathlib import Path
from typing import Any, cast

import numpy as np

from .. import _kernels, optim
from .port import Port

try:
    import fcntl
except ImportError:  # Windows: no locks on temporary files, hence no sweep of stale ones
    fcntl = None  # type: ignore[assignment]

FORMAT = "adamc-checkpoint"
VERSION = 1
_SCHEDULES = {cls.__name__: cls for cls in _kernels._COMPILED_SCHEDULES}
# flock on a file system without locks (some network and FUSE file systems)
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EINVAL}
_CLASSES = {name: getattr(optim, name) for name in optim.__all__ if name != "Optimizer"}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not match (a ValueError)."""


def _encode(value: Any, where: str) -> Any:
    """A JSON value for a hyperparameter (schedules by their constructor arguments)."""
    if isinstance(value, _kernels._ReduceOnPlateau):  # (with its state)
        return {"__schedule__": "_ReduceOnPlateau", "args": list(value._args()),
                "state": value.state_dict()}
    if isinstance(value, _kernels.Schedule):
        cls, args = cast(tuple, value.__reduce__())
        return {"__schedule__": cls.__name__, "args": list(args)}
    if isinstance(value, (np.generic,)):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_encode(v, where) for v in value]
    if callable(value):
        raise ValueError(f"{where} is a Python callable, which a checkpoint cannot hold "
                         f"without pickle; use a schedule from adamc.schedules or "
                         f"copy.deepcopy / pickle the optimizer instead")
    raise ValueError(f"{where} holds a {type(value).__name__}, which a checkpoint cannot "
                     f"hold without pickle")


def _decode(value: Any, where: str) -> Any:
    """The hyperparameter that _encode stored (``where`` names it in errors): JSON of
    another kind than _encode writes is refused here, its values when the optimizer is
    built."""
    if isinstance(value, list):
        return [_decode(v, where) for v in value]
    if isinstance(value, dict):
        name = value.get("__schedule__")
        cls = _SCHEDULES.get(name) if isinstance(name, str) else None
        args = value.get("args")
        stateful = cls is _kernels._ReduceOnPlateau  # (and its state)
        if cls is None or not isinstance(args, list) or len(value) != 2 + stateful:
            raise CheckpointError(f"{where} is not a value adamc writes: {value!r}")
        try:
            schedule = cls(*args)
            if isinstance(schedule, _kernels._ReduceOnPlateau):
                schedule.load_state_dict(value["state"])
            return schedule
        except (TypeError, ValueError, OverflowError, KeyError) as exc:
            raise CheckpointError(f"{where}: {exc}") from None
    return value


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an .npz file that replaces ``path`` in one rename.

    The temporary file sits next to the file it replaces (through a symbolic link: next
    to the link's target, and the link stays), has that file's mode (a new file: the
    umask's), is locked while it is written, and is flushed to disk before the rename.
    Each save first removes the temporary files that earlier saves of the same file
    left when their process was killed.
    """
    target = _target(path)
    directory, name = os.path.split(target)
    directory = directory or "."
    try:
        old: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        old = None
    _sweep(directory, name)
    # never more permissive than the old file, even before _keep_group_and_mode (on
    # Windows, where a mode only says read-only, the temporary file stays writable)
    mode = 0o666 if old is None or os.name != "posix" else stat.S_IMODE(old.st_mode) & 0o777
    fd, tmp = _create_temp(directory, name, mode)
    lock = None
    try:
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:  # holds the lock after f is closed, until the rename:
                lock = os.dup(fd)  # a sweep never sees the file unlocked
            if old is not None:
                _keep_group_and_mode(f.fileno(), old)
            cast(Any, np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        if lock is not None:
            os.close(lock)


def _target(path: Path) -> str:
    """The file a save replaces: ``path``, or the file a symbolic link there points to."""
    if not os.path.islink(path):
        return os.fspath(path)
    try:
        return os.path.realpath(path, strict=True)  # a loop of links: OSError (ELOOP)
    except FileNotFoundError:  # a dangling link: create its target, as open() does
        return os.path.realpath(path)


def _temp_names(name: str) -> re.Pattern[str]:
    """The names of the temporary files of saves to the file ``name`` (the 8 characters
    are those of tempfile.mkstemp, which earlier versions of adamc used)."""
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp")


def _create_temp(directory: str, name: str, mode: int) -> tuple[int, str]:
    """A new temporary file for a save to ``directory/name``, locked where fcntl exists:
    (its descriptor, its path). ``mode`` is given to open(), which applies the umask."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, mode)
        except FileExistsError:
            continue
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A sweep may have found the file in the instant before the lock, and
            # removed it (it removes only what it has locked): then start again.
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return fd, tmp
        except (BlockingIOError, FileNotFoundError):  # a sweep has it, or removed it
            pass
        except OSError as exc:
            if exc.errno not in _NO_LOCKS:
                os.close(fd)
                raise
            return fd, tmp  # a file system without locks: no sweep can remove it either
        os.close(fd)
    raise FileExistsError(f"no free name for a temporary file in {directory}")


def _sweep(directory: str, name: str) -> None:
    """Remove the temporary files that saves to ``directory/name`` left when their
    process died (by SIGKILL, say): the unlocked ones. A running save holds the lock
    on its file, and the kernel releases it when the process ends."""
    if fcntl is None:
        return
    pattern = _temp_names(name)
    try:
        entries = [e.name for e in os.scandir(directory) if pattern.fullmatch(e.name)]
    except OSError:
        return
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    for entry in entries:
        path = os.path.join(directory, entry)
        try:
            fd = os.open(path, flags)
        except OSError:  # gone meanwhile, a link, or not ours to read
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its save runs
                if os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False)):
                    os.unlink(path)
        except OSError:  # locked, renamed meanwhile (a save that finished), or not ours
            pass
        finally:
            os.close(fd)


def _keep_group_and_mode(fd: int, old: os.stat_result) -> None:
    """Give the new file the group (where permitted) and the mode of the file it
    replaces: on a shared file system, the rest of the group keeps its access."""
    if os.name != "posix":  # a mode that only says read-only is not copied
        return
    if os.fstat(fd).st_gid != old.st_gid:
        try:
            os.fchown(fd, -1, old.st_gid)
        except PermissionError:  # not a member of that group: keep ours
            pass
    mode = stat.S_IMODE(old.st_mode)
    if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
        try:
            os.fchmod(fd, mode)
        except OSError as exc:  # a file system without modes (FAT, some network mounts)
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise


def _write(cls: type[optim.Optimizer], payload: dict[str, Any], path: str | os.PathLike,
           _extra: dict[str, Any] | None, _extra_arrays: dict[str, np.ndarray] | None) -> None:
    """Write an optimizer's _export() payload as a checkpoint file."""
    arrays: dict[str, np.ndarray] = {}
    keys = Port(cls).state_keys
    groups, i = [], 0
    for gi, group in enumerate(payload["groups"]):
        meta = {k: _encode(v, f"param_groups[{gi}]['{k}']") for k, v in group.items()
                if k != "params"}
        meta["params"] = len(group["params"])
        groups.append(meta)
        for p in group["params"]:
            arrays[f"param_{i}"] = p
            for key, arr in zip(keys, payload["state"][i]):
                if arr is not None:
                    arrays[f"state_{i}_{key}"] = arr
            if payload["box"] is not None:
                arrays[f"lower_{i}"] = payload["box"][0][i]
                arrays[f"upper_{i}"] = payload["box"][1][i]
            i += 1
    meta = {
        "format": FORMAT, "version": VERSION, "class": payload["class"],
        "defaults": {k: _encode(v, f"defaults['{k}']") for k, v in payload["defaults"].items()},
        "groups": groups, "steps": payload["steps"], "aux": payload["aux"],
        "step_count": payload["step_count"], "skipped_steps": payload["skipped_steps"],
        "options": payload["options"], "bounded": payload["box"] is not None,
        "params": [{"shape": list(p.shape), "dtype": p.dtype.str}
                   for g in payload["groups"] for p in g["params"]],
        "extra": _extra or {},
    }
    ema = payload.get("ema")
    if ema is not None:
        meta["ema"] = {"ema": ema["ema"], "ema_start": ema["ema_start"], "count": ema["count"]}
        for i, arr in enumerate(ema["params"]):
            arrays[f"ema_{i}"] = arr
    arrays["__meta__"] = np.array(json.dumps(meta))
    for key, arr in (_extra_arrays or {}).items():
        arrays[f"extra_{key}"] = arr
    _write_atomically(Path(path), arrays)


class _Archive:
    """An adamc checkpoint opened for reading: its meta data, read and checked when it
    is opened, and its arrays, each read on request once its ``.npy`` header matches
    what the caller expects.

    Every way the file can fail to be a checkpoint is a :class:`CheckpointError`
    (only a missing file is a FileNotFoundError): damaged or foreign bytes never reach
    the caller as another exception, no array is larger than the file, and nothing is
    ever unpickled. zipfile checks each array's CRC when its last byte is read.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = path
        try:
            self._file = open(path, "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:  # a directory, or not ours to read
            raise CheckpointError(f"{path} is not a readable adamc checkpoint "
                                  f"({type(exc).__name__}: {exc})") from None
        try:
            self._size = os.fstat(self._file.fileno()).st_size
            if self._file.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                raise CheckpointError(f"{path} is a .npy file (one array), not an adamc "
                                      f"checkpoint (adamc.save writes an .npz archive)")
            self._file.seek(0)
            archive = self._parse("the zip archive", lambda: zipfile.ZipFile(self._file))
            self._zip: zipfile.ZipFile = archive
            self._members = {info.filename: info for info in archive.infolist()}
            if "__meta__.npy" not in self._members:
                raise CheckpointError(f"{path} is not an adamc checkpoint (it has no "
                                      f"__meta__ member)")
            text = self._read("__meta__", _META)
            meta = self._parse("the meta data", lambda: json.loads(str(text[()])))
            self.meta: dict[str, Any] = _check_meta(meta, path)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def names(self) -> list[str]:
        """The names of the stored arrays."""
        return [name[:-4] for name in self._members if name.endswith(".npy")]

    def has(self, name: str) -> bool:
        return f"{name}.npy" in self._members

    def array(self, name: str, like: np.ndarray | None = None) -> np.ndarray:
        """The stored array ``name``, C-contiguous. With ``like``, it must have like's
        shape and dtype; without, any shape of numbers (no objects, no records)."""
        if not self.has(name):
            raise CheckpointError(f"{self.path} is not a valid adamc checkpoint (the array "
                                  f"{name} is missing)")
        return np.ascontiguousarray(self._read(name, like))

    def _parse(self, what: str, parse: Any) -> Any:
        """``parse()``, whose failures on damaged bytes become CheckpointError. zipfile,
        NumPy's .npy header parser and json raise many kinds of exceptions on them
        (BadZipFile, NotImplementedError, RuntimeError, tokenize.TokenError,
        RecursionError, ...), so any exception but a real MemoryError is taken."""
        try:
            return parse()
        except (CheckpointError, MemoryError):
            raise
        except Exception as exc:
            raise CheckpointError(f"{self.path} is not a readable adamc checkpoint ({what}: "
                                  f"{type(exc).__name__}: {exc})") from None

    def _read(self, name: str, like: np.ndarray | str | None) -> np.ndarray:
        """Read member ``name``: its header is checked (against ``like``, an array or
        _META) before any of its data is read."""
        info = self._members[f"{name}.npy"]
        where = f"{self.path}: the array {name}"
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > self._size:
            raise CheckpointError(f"{where} is compressed or larger than the file (adamc "
                                  f"writes its arrays uncompressed)")
        with self._parse(name, lambda: self._zip.open(info)) as member:
            shape, fortran, dtype, start = self._parse(f"the header of {name}",
                                                       lambda: _npy_header(member))
            if dtype.hasobject:
                raise CheckpointError(f"{where} holds Python objects, which a checkpoint "
                                      f"never does (loading never unpickles)")
            if isinstance(like, np.ndarray):
                if shape != like.shape or dtype != like.dtype:
                    raise CheckpointError(f"{where} has shape {shape} and dtype {dtype}; "
                                          f"expected shape {like.shape} and dtype "
                                          f"{like.dtype}")
            elif like is _META:
                if shape != () or dtype.kind != "U":
                    raise CheckpointError(f"{self.path} is not an adamc checkpoint (its "
                                          f"meta data is not a text)")
            elif dtype.kind not in "biufc" or dtype.fields is not None:
                raise CheckpointError(f"{where} has dtype {dtype}, not numbers")
            count = 1
            for n in shape:
                count *= n
            if start + count * dtype.itemsize != info.file_size:
                raise CheckpointError(f"{where} has {info.file_size - start} bytes of data "
                                      f"for shape {shape} and dtype {dtype}")
            flat = np.empty(count, dtype)
            self._parse(name, lambda: _read_into(member, flat.view(np.uint8)))
        return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


_NPY_MAGIC = b"\x93NUMPY"
_META = "meta"  # Archive._read's ``like`` for the meta data member


def _npy_header(member: Any) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """The shape, Fortran order and dtype of an .npy stream (of the versions np.save
    writes for adamc's arrays), and the offset of its data."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        header = np.lib.format.read_array_header_2_0(member)
    else:
        raise ValueError(f".npy format version {version}")
    return (*header, member.tell())


def _read_into(member: Any, out: np.ndarray) -> None:
    """Fill the bytes ``out`` from ``member`` in pieces (no second copy of a large
    array in memory), then check that the member ends there (and so its CRC). Pieces
    of 256 KiB, as np.load reads: 16 MiB pieces made a load of 48 MB 3x slower."""
    done, total = 0, out.size
    while done < total:
        piece = member.read(min(total - done, 1 << 18))
        if not piece:
            raise EOFError(f"the data ends after {done} of {total} bytes")
        out[done:done + len(piece)] = np.frombuffer(piece, np.uint8)
        done += len(piece)
    if member.read(1):
        raise ValueError("data after the array")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS = {"class": str, "defaults": dict, "groups": list, "steps": list, "aux": list,
          "step_count": int, "skipped_steps": int, "options": dict, "bounded": bool,
          "params": list}
_FLOAT_DTYPES = {order + code for order in "<>" for code in ("f4", "f8")}


def _check_meta(meta: Any, path: Any) -> dict[str, Any]:
    """The meta data of an adamc checkpoint, its structure checked (the values are
    checked when the optimizer is built)."""
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path} is not a valid adamc checkpoint (bad meta data: "
                               f"{what})")

    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an adamc checkpoint")
    version: Any = meta.get("version")
    if not _is_int(version) or version < 1:
        raise bad(f"version {version!r}")
    if version > VERSION:
        raise CheckpointError(f"{path} was written by a newer adamc (format version "
                              f"{version}); upgrade adamc to read it")
    for key, kind in _KINDS.items():
        if key not in meta:
            raise bad(f"no '{key}'")
        if not isinstance(meta[key], kind) or (kind is int and not _is_int(meta[key])):
            raise bad(f"'{key}' is {meta[key]!r}")
    if meta["class"] not in _CLASSES:
        raise bad(f"unknown optimizer class {meta['class']!r}")
    for gi, group in enumerate(meta["groups"]):
        if not isinstance(group, dict) or not _is_int(group.get("params")) \
                or group["params"] < 0:
            raise bad(f"param group {gi} is {group!r}")
    for i, spec in enumerate(meta["params"]):
        if not (isinstance(spec, dict) and isinstance(spec.get("shape"), list)
                and all(_is_int(n) and n >= 0 for n in spec["shape"])
                and isinstance(spec.get("dtype"), str) and spec["dtype"] in _FLOAT_DTYPES):
            raise bad(f"parameter {i} is described as {spec!r}")
    unknown = set(meta["options"]) - set(Port(_CLASSES[meta["class"]]).options)
    if unknown:
        raise bad(f"unknown options {sorted(unknown)}")
    if not isinstance(meta.get("extra", {}), dict):
        raise bad(f"'extra' is {meta['extra']!r}")
    ema = meta.get("ema")
    if ema is not None and not (isinstance(ema, dict)
                                and set(ema) == {"ema", "ema_start", "count"}):
        raise bad(f"'ema' is {ema!r}")
    return meta


def _payload(archive: _Archive, params: list[np.ndarray]
             ) -> tuple[type[optim.Optimizer], dict[str, Any], list[np.ndarray]]:
    """Check a checkpoint against the caller's params; return the optimizer class, its
    payload (state arrays from the file, params from the caller) and the saved values.
    Each array is read only once its description matches its parameter."""
    meta, path = archive.meta, archive.path
    cls = _CLASSES[meta["class"]]
    specs = meta["params"]
    if len(params) != len(specs):
        raise CheckpointError(f"{path} holds {len(specs)} parameters, got {len(params)}")
    for i, (p, spec) in enumerate(zip(params, specs)):
        _kernels.check_param(p, f"params[{i}]")
        if list(p.shape) != spec["shape"] or p.dtype.str != spec["dtype"]:
            raise CheckpointError(
                f"params[{i}] has shape {p.shape} and dtype {p.dtype}; the checkpoint "
                f"holds shape {tuple(spec['shape'])} and dtype {np.dtype(spec['dtype'])}")
    groups, i = [], 0
    for gi, g in enumerate(meta["groups"]):
        group = {k: _decode(v, f"{path}: param_groups[{gi}]['{k}']")
                 for k, v in g.items() if k != "params"}
        group["params"] = params[i:i + g["params"]]
        groups.append(group)
        i += g["params"]
    if i != len(params):
        raise CheckpointError(f"{path}: param groups do not add up to the parameters")
    saved_values = [archive.array(f"param_{i}", p) for i, p in enumerate(params)]
    keys = Port(cls).state_keys
    state = [[archive.array(f"state_{i}_{key}", p) if archive.has(f"state_{i}_{key}")
              else None for key in keys] for i, p in enumerate(params)]
    box = None
    if meta["bounded"]:
        box = ([archive.array(f"lower_{i}", p) for i, p in enumerate(params)],
               [archive.array(f"upper_{i}", p) for i, p in enumerate(params)])
    payload = {
        "defaults": {k: _decode(v, f"{path}: defaults['{k}']")
                     for k, v in meta["defaults"].items()},
        "groups": groups, "state": state, "steps": meta["steps"], "aux": meta["aux"],
        "step_count": meta["step_count"], "skipped_steps": meta["skipped_steps"],
        "options": meta["options"], "box": box,
    }
    if meta.get("ema") is not None:
        payload["ema"] = dict(meta["ema"], params=[archive.array(f"ema_{i}", p)
                                                   for i, p in enumerate(params)])
    return cls, payload, saved_values


def _fingerprint(value: Any) -> str:
    """A text that is equal on two ranks exactly when the values are."""
    if isinstance(value, np.ndarray):
        return (f"array {value.shape} {value.dtype} with checksum "
                f"{zlib.crc32(np.ascontiguousarray(value).data):08x}")
    try:
        return repr(_encode(value, "value"))
    except ValueError:  # not storable: a Python callable or another object
        kind = "callable" if callable(value) else "object"
        return f"{kind} {getattr(value, '__module__', '?')}." \
               f"{getattr(value, '__qualname__', type(value).__qualname__)}"
