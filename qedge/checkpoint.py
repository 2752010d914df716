"""Model files (``.qedge``) and training-resume files, safetensors only (design.md §8).

A model file is ONE safetensors file: the tensors are the model's ``state_dict`` and the JSON
metadata lives in the safetensors header (``__metadata__``) under two keys::

    "format": "qedge-model/1"
    "meta":   {"arch", "arch_kwargs", "labels", "features", "clip_seconds", "task", "history", ...}

Loading never runs code from the file: safetensors holds raw tensors and a JSON header only, and the
architecture is rebuilt from its name with :func:`qedge.models.build`. A pruned model (tensors that
are smaller than the architecture's defaults) is reloaded by re-creating the affected parameters
with the stored shapes and updating the channel attributes of standard layers (generic, no
per-architecture code; quaternion layers derive their channel counts from their weights).

Writes are atomic: a temporary file in the destination folder, ``fsync``, then ``os.replace``; a
crash (or Ctrl-C) leaves either the old file or the new one, never a torn one.

The resume file (``<model>.resume``) is also safetensors + JSON: model, optimizer state tensors,
RNG states, best weights; never pickle.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from qedge.errors import QedgeError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "MODEL_FORMAT",
    "RESUME_FORMAT",
    "REQUIRED_META",
    "save",
    "save_state",
    "load",
    "read_meta",
    "resume_path",
    "save_tensors",
    "load_tensors",
    "atomic_write_bytes",
    "rebuild",
    "apply_state_shapes",
]

MODEL_FORMAT = "qedge-model/1"
RESUME_FORMAT = "qedge-resume/1"
#: Keys every model file's meta carries.
REQUIRED_META = ("arch", "arch_kwargs", "labels", "features", "clip_seconds", "task", "history")

_PICKLE_HINT = ("qedge model files are safetensors; this looks like a pickle/torch.save file, which "
                "qedge never loads because unpickling can run code")


# ----------------------------------------------------------------------------------------------
# Low level: atomic writes, safetensors with a JSON header
# ----------------------------------------------------------------------------------------------
def _default_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0666 less the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, ``os.replace``)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), _default_file_mode())  # mkstemp creates 0600; honour the umask
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    return path


def _tensor_dict(tensors: Mapping[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """CPU, contiguous, storage-unshared copies (safetensors refuses shared storage)."""
    out = {}
    for key, value in tensors.items():
        out[key] = value.detach().to("cpu").contiguous().clone()
    return out


def save_tensors(path: str | Path, tensors: Mapping[str, "torch.Tensor"], header: Mapping[str, Any]) -> Path:
    """Atomically write ``tensors`` with a JSON-serialisable ``header`` (each value JSON-encoded)."""
    from safetensors.torch import save as st_save

    metadata = {str(k): json.dumps(v) for k, v in header.items()}
    return atomic_write_bytes(path, st_save(_tensor_dict(tensors), metadata=metadata))


def _sniff(path: Path) -> None:
    """Refuse files that are obviously not safetensors with a precise one-line reason."""
    if not path.exists():
        raise QedgeError(f"{path}: no such file")
    if path.is_dir():
        raise QedgeError(f"{path}: is a folder, expected a .qedge model file")
    with path.open("rb") as fh:
        head = fh.read(16)
    # A safetensors file starts with its header length (u64 little endian) and then '{'; a header
    # length whose low byte is 0x80 looks like a pickle's PROTO opcode, so check the '{' first.
    if (head[:1] == b"\x80" and head[8:9] != b"{") or head[:2] == b"PK":
        raise QedgeError(f"{path}: {_PICKLE_HINT}")
    if len(head) < 8:
        raise QedgeError(f"{path}: not a qedge model file (too short)")
    header_len = int.from_bytes(head[:8], "little")
    if header_len <= 0 or header_len > min(100_000_000, path.stat().st_size - 8) or head[8:9] != b"{":
        raise QedgeError(f"{path}: not a qedge model file (no safetensors header)")


def load_tensors(path: str | Path, expected_format: str, map_location: str = "cpu") -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    """Read a file written by :func:`save_tensors`; check its ``format`` header; return (tensors, header)."""
    from safetensors import safe_open

    path = Path(path)
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as fh:
            raw = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except QedgeError:
        raise
    except Exception as exc:  # safetensors raises its own error types (truncated, bad header...)
        raise QedgeError(f"{path}: corrupt or unreadable model file ({_one_line(exc)})") from exc
    try:
        header = {k: json.loads(v) for k, v in raw.items()}
    except json.JSONDecodeError as exc:
        raise QedgeError(f"{path}: corrupt qedge header ({exc})") from exc
    fmt = header.get("format")
    if fmt != expected_format:
        what = "a qedge resume file" if fmt == RESUME_FORMAT else (
            "a qedge model file" if fmt == MODEL_FORMAT else "a safetensors file without qedge metadata")
        raise QedgeError(f"{path}: expected {expected_format.split('/')[0]}, found {what}")
    return tensors, header


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------
# Model files
# ----------------------------------------------------------------------------------------------
def _unwrap(model: "nn.Module") -> "nn.Module":
    """The bare module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def _jsonable(meta: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(dict(meta)))
    except (TypeError, ValueError) as exc:
        raise QedgeError(f"model metadata is not JSON-serialisable: {exc}") from exc


def save(path: str | Path, model: "nn.Module", meta: Mapping[str, Any]) -> Path:
    """Write ``model`` (its state_dict) and ``meta`` to ONE ``.qedge`` file, atomically.

    ``meta`` needs at least ``labels``, ``features`` (``FeatureConfig.to_dict()``), ``clip_seconds``
    and ``task``; ``arch`` / ``arch_kwargs`` default to the model's ``.arch`` / ``.arch_kwargs`` and
    ``history`` to ``[]``. Anything else JSON-serialisable is kept.
    """
    model = _unwrap(model)
    meta = dict(meta)
    meta.setdefault("arch", getattr(model, "arch", None))
    meta.setdefault("arch_kwargs", dict(getattr(model, "arch_kwargs", {}) or {}))
    return save_state(path, model.state_dict(), meta)


def save_state(path: str | Path, state: Mapping[str, "torch.Tensor"], meta: Mapping[str, Any]) -> Path:
    """:func:`save` for a bare ``state_dict`` (e.g. the best weights kept during training)."""
    meta = dict(meta)
    meta.setdefault("history", [])
    missing = [k for k in REQUIRED_META if meta.get(k) is None]
    if missing:
        raise QedgeError(f"cannot save {path}: model metadata lacks {', '.join(missing)}")
    if meta["task"] not in ("single-label", "multi-label"):
        raise QedgeError(f"cannot save {path}: task must be 'single-label' or 'multi-label', got {meta['task']!r}")
    return save_tensors(path, state, {"format": MODEL_FORMAT, "meta": _jsonable(meta)})


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a ``.qedge`` file without building the model (reads the header only)."""
    from safetensors import safe_open

    path = Path(path)
    _sniff(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = fh.metadata() or {}
        header = {k: json.loads(v) for k, v in raw.items()}
    except Exception as exc:
        raise QedgeError(f"{path}: corrupt or unreadable model file ({_one_line(exc)})") from exc
    if header.get("format") != MODEL_FORMAT:
        raise QedgeError(f"{path}: not a qedge model file (no qedge metadata)")
    return _check_meta(path, header.get("meta"))


def _check_meta(path: Path, meta: Any) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise QedgeError(f"{path}: corrupt qedge metadata")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise QedgeError(f"{path}: qedge metadata lacks {', '.join(missing)}")
    return meta


def rebuild(meta: Mapping[str, Any], source: str = "model") -> "nn.Module":
    """Build the architecture named in ``meta`` with :func:`qedge.models.build` (default shapes)."""
    from qedge import models

    arch, kwargs = meta.get("arch"), dict(meta.get("arch_kwargs") or {})
    try:
        return models.build(arch, **kwargs)
    except QedgeError as exc:
        raise QedgeError(f"{source}: {exc}") from exc
    except (KeyError, ValueError, TypeError) as exc:
        raise QedgeError(f"{source}: cannot rebuild architecture {arch!r} with {kwargs}: {_one_line(exc)}") from exc


def apply_state_shapes(model: "nn.Module", state: Mapping[str, "torch.Tensor"]) -> list[str]:
    """Re-create parameters/buffers whose stored shape differs from ``model``'s (a pruned model).

    For every tensor in ``state`` whose shape differs, the owning module's Parameter (or buffer) is
    replaced by an empty tensor of the stored shape, then the module's size attributes are derived
    from its tensors (BatchNorm/GroupNorm/LayerNorm ``num_features``…, Linear ``in/out_features``,
    ConvNd ``in/out_channels``; quaternion layers need nothing: they derive sizes from ``weight``).
    Returns the names of the re-shaped modules. Raises ``KeyError`` on missing/unexpected keys.
    """
    import torch
    from torch import nn

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{'…' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{'…' if len(unexpected) > 3 else ''}")
        raise KeyError("; ".join(parts))
    changed: dict[str, nn.Module] = {}
    for key, tensor in state.items():
        if tuple(own[key].shape) == tuple(tensor.shape):
            continue
        mod_name, _, attr = key.rpartition(".")
        module = model.get_submodule(mod_name) if mod_name else model
        if attr in module._parameters and module._parameters[attr] is not None:
            old = module._parameters[attr]
            module._parameters[attr] = nn.Parameter(
                torch.empty(tensor.shape, dtype=old.dtype, device=old.device), requires_grad=old.requires_grad)
        elif attr in module._buffers and module._buffers[attr] is not None:
            old = module._buffers[attr]
            module._buffers[attr] = torch.empty(tensor.shape, dtype=old.dtype, device=old.device)
        else:  # pragma: no cover - state_dict keys always map to a parameter or a buffer
            raise KeyError(f"{key}: not a parameter or buffer")
        changed[mod_name] = module
    for module in changed.values():
        _sync_size_attributes(module)
    return sorted(changed)


def _sync_size_attributes(module: "nn.Module") -> None:
    """Derive the size attributes of a standard layer from its (re-shaped) tensors."""
    from torch import nn

    weight = getattr(module, "weight", None)
    if isinstance(module, nn.modules.batchnorm._NormBase):
        ref = weight if weight is not None else module.running_mean
        module.num_features = int(ref.shape[0])
    elif isinstance(module, nn.GroupNorm):
        module.num_channels = int(weight.shape[0])
    elif isinstance(module, nn.LayerNorm) and weight is not None:
        module.normalized_shape = tuple(weight.shape)
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = int(weight.shape[0]), int(weight.shape[1])
    elif isinstance(module, nn.modules.conv._ConvNd):
        if module.transposed:
            module.in_channels = int(weight.shape[0])
            module.out_channels = int(weight.shape[1]) * module.groups
        else:
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            if depthwise and weight.shape[1] == 1:
                module.groups = int(weight.shape[0])
            module.out_channels = int(weight.shape[0])
            module.in_channels = int(weight.shape[1]) * module.groups
    elif isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = int(weight.shape[0]), int(weight.shape[1])


def load(path: str | Path, map_location: str = "cpu") -> tuple["nn.Module", dict[str, Any]]:
    """Load a ``.qedge`` file → ``(model in eval mode, meta)``; never executes code from the file.

    The architecture is rebuilt from ``meta['arch']`` / ``meta['arch_kwargs']``; tensors whose
    stored shapes differ from the defaults (pruned models) are re-created with the stored shapes
    (:func:`apply_state_shapes`). Wrong, corrupt or foreign files raise :class:`QedgeError`.
    """
    path = Path(path)
    tensors, header = load_tensors(path, MODEL_FORMAT, map_location)
    meta = _check_meta(path, header.get("meta"))
    model = rebuild(meta, source=str(path))
    try:
        apply_state_shapes(model, tensors)
        model.load_state_dict(tensors, strict=True)
    except (KeyError, RuntimeError) as exc:
        raise QedgeError(f"{path}: weights do not match architecture {meta['arch']!r} ({_one_line(exc)})") from exc
    model.to(map_location)
    model.eval()
    return model, meta


def resume_path(model_path: str | Path) -> Path:
    """Where the resume state of training into ``model_path`` lives: ``<model_path>.resume``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".resume")
