"""The checkpoint file format: an optimizer's snapshot (``Optimizer._export()``) as an
``.npz`` file of arrays plus JSON meta data, and back.

The layer between the optimizers and their two users, :mod:`adamc.checkpoint`
(``save``/``load``) and :mod:`adamc.distributed` (collective saves): neither imports
the other.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, cast

import numpy as np

from . import _kernels, optim
from ._port import Port

FORMAT = "adamc-checkpoint"
VERSION = 1
_SCHEDULES = {cls.__name__: cls for cls in _kernels._COMPILED_SCHEDULES}
_CLASSES = {name: getattr(optim, name) for name in optim.__all__ if name != "Optimizer"}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not match (a ValueError)."""


def _encode(value: Any, where: str) -> Any:
    """A JSON value for a hyperparameter (schedules by their constructor arguments)."""
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


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "__schedule__" in value:
        return _SCHEDULES[value["__schedule__"]](*value["args"])
    return value


def _write_atomically(path: Path, arrays: dict[str, np.ndarray]) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            cast(Any, np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
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


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Meta data and arrays of a checkpoint, all in memory; CheckpointError if the file
    is not a complete, readable adamc checkpoint."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(f"{path} is not a readable adamc checkpoint "
                              f"({type(exc).__name__}: {exc})") from None
    try:
        meta = json.loads(str(arrays.pop("__meta__")[()]))
        if meta["format"] != FORMAT:
            raise CheckpointError(f"{path} is not an adamc checkpoint")
        if meta["version"] > VERSION:
            raise CheckpointError(f"{path} was written by a newer adamc (format version "
                                  f"{meta['version']}); upgrade adamc to read it")
        return meta, arrays
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path} is not a valid adamc checkpoint (bad meta data: "
                              f"{exc!r})") from None


def _payload(meta: dict[str, Any], arrays: dict[str, np.ndarray], params: list[np.ndarray],
             path: Any) -> tuple[type[optim.Optimizer], dict[str, Any], list[np.ndarray]]:
    """Check a checkpoint against the caller's params; return the optimizer class, its
    payload (state arrays from the file, params from the caller) and the saved values."""
    try:
        cls = _CLASSES[meta["class"]]
        specs = meta["params"]
        if len(params) != len(specs):
            raise CheckpointError(f"{path} holds {len(specs)} parameters, got {len(params)}")
        saved_values = []
        for i, (p, spec) in enumerate(zip(params, specs)):
            _kernels.check_param(p, f"params[{i}]")
            if list(p.shape) != spec["shape"] or p.dtype.str != spec["dtype"]:
                raise CheckpointError(
                    f"params[{i}] has shape {p.shape} and dtype {p.dtype}; the checkpoint "
                    f"holds shape {tuple(spec['shape'])} and dtype {np.dtype(spec['dtype'])}")
            value = arrays[f"param_{i}"]
            if value.shape != p.shape or value.dtype != p.dtype:
                raise CheckpointError(f"{path}: stored param_{i} does not match its description")
            saved_values.append(value)
        groups, i = [], 0
        for g in meta["groups"]:
            group = {k: _decode(v) for k, v in g.items() if k != "params"}
            group["params"] = params[i:i + g["params"]]
            groups.append(group)
            i += g["params"]
        if i != len(params):
            raise CheckpointError(f"{path}: param groups do not add up to the parameters")
        state, keys = [], Port(cls).state_keys
        for i in range(len(params)):
            state.append([np.ascontiguousarray(arrays[f"state_{i}_{key}"])
                          if f"state_{i}_{key}" in arrays else None for key in keys])
        box = None
        if meta["bounded"]:
            box = ([np.ascontiguousarray(arrays[f"lower_{i}"]) for i in range(len(params))],
                   [np.ascontiguousarray(arrays[f"upper_{i}"]) for i in range(len(params))])
        payload = {
            "defaults": {k: _decode(v) for k, v in meta["defaults"].items()},
            "groups": groups, "state": state, "steps": meta["steps"], "aux": meta["aux"],
            "step_count": meta["step_count"], "skipped_steps": meta["skipped_steps"],
            "options": meta["options"], "box": box,
        }
        if meta.get("ema") is not None:
            payload["ema"] = dict(meta["ema"], params=[np.ascontiguousarray(arrays[f"ema_{i}"])
                                                       for i in range(len(params))])
    except CheckpointError:
        raise
    except (KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{path} is not a valid adamc checkpoint ({exc!r})") from None
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
