"""Read and write the safetensors format with numpy alone, so checkpoints load without
executing code (no pickle, no ``torch.load``).

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian unsigned header
length N, then N bytes of UTF-8 JSON mapping each tensor name to ``{"dtype", "shape",
"data_offsets": [begin, end]}`` (offsets relative to the end of the header) plus an optional
``"__metadata__"`` of string → string, then the raw little-endian tensor bytes.

bfloat16 has no numpy dtype: such tensors are read as ``uint16`` holding the raw bits
(``load_torch`` turns them back into ``torch.bfloat16``).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from pytrafgen.atomic import atomic_file
from pytrafgen.errors import CheckpointError

if TYPE_CHECKING:
    import torch

_NUMPY_TO_ST: dict[np.dtype, str] = {
    np.dtype(np.float64): "F64",
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.int16): "I16",
    np.dtype(np.int8): "I8",
    np.dtype(np.uint64): "U64",
    np.dtype(np.uint32): "U32",
    np.dtype(np.uint16): "U16",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}
_ST_TO_NUMPY: dict[str, np.dtype] = {v: k for k, v in _NUMPY_TO_ST.items()}
_ST_TO_NUMPY["BF16"] = np.dtype(np.uint16)  # raw bits; see load_torch
# Header larger than this is not a checkpoint we wrote; refuse before allocating it.
_MAX_HEADER_BYTES = 100 * 1024 * 1024


def save_file(
    tensors: Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
    bf16_names: frozenset[str] = frozenset(),
) -> None:
    """Write ``tensors`` to ``path`` atomically. Names in ``bf16_names`` are uint16 arrays
    holding bfloat16 bits and are tagged ``BF16``."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    ordered: list[np.ndarray] = []
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")  # (ascontiguousarray would make scalars 1-D)
        if array.dtype not in _NUMPY_TO_ST:
            raise TypeError(f"safetensors: tensor {name!r} has unsupported dtype {array.dtype}")
        dtype = "BF16" if name in bf16_names else _NUMPY_TO_ST[array.dtype]
        if dtype == "BF16" and array.dtype != np.uint16:
            raise TypeError(f"safetensors: bf16 tensor {name!r} must be given as uint16 bits")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        ordered.append(array)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    # Pad the header with spaces so the tensor data starts 8-byte aligned (as the reference does).
    header_bytes += b" " * (-(8 + len(header_bytes)) % 8)
    with atomic_file(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header_bytes)))
        fh.write(header_bytes)
        for array in ordered:
            fh.write(array.tobytes())


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, dict], dict[str, str], int]:
    """(tensor entries, metadata, byte offset of the data section) of a safetensors file."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                raise CheckpointError(f"{path}: at byte 0: too short for a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER_BYTES, size - 8):
                raise CheckpointError(f"{path}: at byte 0: header length {n} is impossible")
            raw = fh.read(n)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        header = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: at byte 8: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: at byte 8: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    data_start = 8 + n
    data_len = size - data_start
    for name, entry in header.items():
        try:
            begin, end = (int(x) for x in entry["data_offsets"])
            dtype = _ST_TO_NUMPY[entry["dtype"]]
            count = int(np.prod(entry["shape"], dtype=np.int64))
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: at byte 8: bad header entry for {name!r}") from None
        if not 0 <= begin <= end <= data_len or end - begin != count * dtype.itemsize:
            raise CheckpointError(
                f"{path}: at byte {data_start + begin}: tensor {name!r} offsets {begin}..{end} "
                f"do not match its shape or the file size"
            )
    return header, metadata, data_start


def load_file(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """All tensors of a safetensors file as numpy arrays (BF16 as uint16 bits), and its metadata."""
    header, metadata, data_start = read_header(path)
    with open(path, "rb") as fh:
        fh.seek(data_start)
        data = fh.read()
    tensors: dict[str, np.ndarray] = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = _ST_TO_NUMPY[entry["dtype"]].newbyteorder("<")
        array = np.frombuffer(data, dtype=dtype, count=(end - begin) // dtype.itemsize, offset=begin)
        # native order as numpy's own dtype object (C++ bindings compare dtypes by identity)
        tensors[name] = array.astype(np.dtype(dtype.name), copy=True).reshape(entry["shape"])
    return tensors, metadata


def dtypes(path: str | os.PathLike[str]) -> dict[str, str]:
    """The safetensors dtype tag of each tensor (to tell BF16 from U16)."""
    header, _, _ = read_header(path)
    return {name: entry["dtype"] for name, entry in header.items()}


def save_torch(
    tensors: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write torch tensors (any device; bfloat16 kept as BF16)."""
    import torch

    arrays: dict[str, np.ndarray] = {}
    bf16: set[str] = set()
    for name, tensor in tensors.items():
        t = tensor.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            bf16.add(name)
            t = t.view(torch.int16)
            arrays[name] = t.numpy().view(np.uint16)
        else:
            arrays[name] = t.numpy()
    save_file(arrays, path, metadata, frozenset(bf16))


def load_torch(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file into torch tensors on ``device``."""
    import torch

    arrays, _ = load_file(path)
    tags = dtypes(path)
    out: dict[str, torch.Tensor] = {}
    for name, array in arrays.items():
        if tags[name] == "BF16":
            tensor = torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
        else:
            tensor = torch.from_numpy(array)
        out[name] = tensor.to(device)
    return out


__all__ = ["dtypes", "load_file", "load_torch", "read_header", "save_file", "save_torch"]
