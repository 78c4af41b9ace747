"""Checkpoints: tensors plus JSON, never a pickle.

A checkpoint file is ``torch.save`` of one flat dictionary::

    {"format": "retinakit-checkpoint", "version": 1,
     "json": "<JSON text>", "tensors": {name: tensor, ...}, "sha256": "<hex>"}

``sha256`` covers the JSON text and every tensor (name, dtype, shape, bytes, in name order), so a
truncated or edited file is detected. Loading uses ``torch.load(..., weights_only=True)``: a
file that needs the pickle machinery (arbitrary objects) is refused with
:class:`~retinakit.errors.CheckpointError`.

Nested state (an optimiser's ``state_dict``) is stored with :func:`pack` / :func:`unpack`:
tensors go to the tensor table and are replaced by ``{"__tensor__": name}`` in the JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import CheckpointError

FORMAT_NAME = "retinakit-checkpoint"
FORMAT_VERSION = 1


def _digest(text: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(text.encode("utf-8"))
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(name.encode("utf-8"))
        h.update(str(t.dtype).encode("ascii"))
        h.update(json.dumps(list(t.shape)).encode("ascii"))
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_checkpoint(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> Path:
    """Atomically write ``tensors`` (flat name -> tensor) and ``info`` (JSON-able) to ``path``."""
    text = json.dumps(_to_jsonable(info), sort_keys=True)
    flat = {str(k): v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "json": text, "tensors": flat, "sha256": _digest(text, flat)}
    target = Path(path)
    buf = io.BytesIO()  # serialise in memory: torch's file writer reports a full disk as a bare RuntimeError
    torch.save(payload, buf)
    with atomic_path(target, suffix=".pt") as tmp:
        tmp.write_bytes(buf.getbuffer())  # an OSError (ENOSPC, EROFS...) here becomes an OutputError
    return target


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; return ``(tensors, info)``.

    Raises :class:`CheckpointError` when the file is missing, is not a retinakit checkpoint,
    needs unpickling of arbitrary objects, or fails its checksum.
    """
    p = Path(path)
    where = str(p)
    if not p.is_file():
        raise CheckpointError(f"checkpoint '{p}' does not exist", fix="give a run folder or its model.pt / checkpoint.pt")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for unsafe or corrupt files
        msg = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
            raise CheckpointError(f"refusing to load '{p}': it holds pickled Python objects, not tensors + JSON ({msg})", where,
                                  "only load checkpoints written by retinakit; a pickle can run arbitrary code") from exc
        raise CheckpointError(f"'{p}' cannot be read as a checkpoint ({type(exc).__name__}: {msg})", where, "the file is truncated or corrupt; refit or copy it again") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_NAME:
        raise CheckpointError(f"'{p}' is not a retinakit checkpoint", where, "give a model.pt or checkpoint.pt written by `retinakit fit`")
    version = payload.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint format version {version!r} is not supported (this retinakit reads <= {FORMAT_VERSION})", where, "upgrade retinakit")
    text, tensors, digest = payload.get("json"), payload.get("tensors"), payload.get("sha256")
    if not isinstance(text, str) or not isinstance(tensors, dict) or not isinstance(digest, str):
        raise CheckpointError("checkpoint is missing its JSON, tensors or checksum", where, "the file is damaged; refit")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items()):
        raise CheckpointError("checkpoint tensor table holds something other than tensors", where, "the file is damaged; refit")
    if _digest(text, tensors) != digest:
        raise CheckpointError("checkpoint checksum does not match its content", where, "the file was modified or damaged; refit or copy it again")
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint JSON is invalid ({exc})", where) from exc
    return tensors, info


def pack(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace the tensors in a nested dict/list by references, filling ``tensors``; return the JSON part."""
    if isinstance(obj, torch.Tensor):
        name = f"{prefix}"
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, dict):
        return {"__dict__": [[k, pack(v, f"{prefix}/{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [pack(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
    return obj


def unpack(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`pack` (dict keys keep their original int/str type)."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            name = obj["__tensor__"]
            if name not in tensors:
                raise CheckpointError(f"checkpoint refers to a missing tensor '{name}'", fix="the file is damaged; refit")
            return tensors[name]
        if "__dict__" in obj:
            return {k: unpack(v, tensors) for k, v in obj["__dict__"]}
        return {k: unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    return obj
