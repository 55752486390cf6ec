"""A restricted unpickler for the authors' `.pkl` / object `.npy` files, and a safe `.pth` loader.

Their label maps, tags, queries and embeddings are pickles from the internet (SPEC §10). Only
plain data comes back: builtins containers and primitives (opcodes, no class lookup), sets,
OrderedDict, numpy arrays / dtypes / scalars, and CPU tensors rebuilt through
`torch.load(weights_only=True)`. Any other global (`os.system`, `builtins.eval`, an unknown class)
is refused with one SuiteError line naming the file, before anything runs.
"""

from __future__ import annotations

import collections
import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npy_format

from src.errors import SuiteError

# numpy's own reconstructors, taken from numpy itself so the names written by numpy 1.x
# (`numpy.core.multiarray`) and 2.x (`numpy._core.multiarray`) map to the same functions.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_SCALAR = np.int64(0).__reduce__()[0]


def _storage_from_bytes(data: bytes) -> Any:
    """Stands in for `torch.storage._load_from_bytes`, which calls torch.load(weights_only=False).

    A tensor pickled with plain pickle (as their np.save of the embeddings dict does) is
    `torch._utils._rebuild_tensor_v2(storage, …)`, the storage `_load_from_bytes(<torch.save
    bytes>)`. Those bytes are a torch.save archive: loading them with weights_only=True lets torch's
    own allowlist decide, so no code in them can run.
    """
    import torch

    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("a tensor storage must be given as bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notice
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("tensor bytes did not hold a storage")
    return storage


def _rebuild_tensor(storage, offset, size, stride, *_ignored):  # requires_grad, hooks, metadata
    """`torch._utils._rebuild_tensor_v2` on a storage from `_storage_from_bytes` only, no hooks.

    torch does not check that size/stride stay inside the storage here (a crafted file could
    read past it), so the extent is checked first.
    """
    import torch

    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("a tensor must be rebuilt from a storage")
    dims = (offset, *size, *stride)
    if not all(type(v) is int and v >= 0 for v in dims) or len(size) != len(stride):
        raise pickle.UnpicklingError("a tensor's offset, size and stride must be natural numbers")
    extent = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TypedStorage deprecation notice
        if 0 not in size and extent > storage.size():
            raise pickle.UnpicklingError("a tensor reaches beyond its storage")
        return torch._utils._rebuild_tensor_v2(
            storage, offset, size, stride, False, collections.OrderedDict()
        )


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
}


class _Refused(pickle.UnpicklingError):
    """A global outside the allowlist."""


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come from the allowlist above, nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {pid!r}")


def _unpickle(stream: io.BufferedIOBase, path: Path) -> Any:
    try:
        return RestrictedUnpickler(stream).load()
    except _Refused as e:
        raise SuiteError(
            f"{path}: refused to unpickle {e} (only plain data, numpy arrays and tensors are "
            "allowed); this is not a file as the authors' code writes it"
        ) from None
    except Exception as e:  # corrupt data, bad arguments to an allowed global, a refused tensor
        raise SuiteError(
            f"{path}: refused or unreadable pickle ({type(e).__name__}: {_first_line(e)})"
        ) from None


def _first_line(e: Exception) -> str:
    """One line of an error message: torch's line naming the refused global, else the first."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    named = [x for x in lines if "GLOBAL" in x or x.lower().startswith("unsupported")]
    return (named or lines or [""])[0][:200]


def load_pickle(path: str | Path) -> Any:
    """A `.pkl` file through the restricted unpickler."""
    path = Path(path)
    with open(path, "rb") as f:
        return _unpickle(f, path)


def load_npy(path: str | Path) -> Any:
    """A `.npy` file; an object array's pickled payload goes through the restricted unpickler.

    The authors' embeddings are `np.save` of a dict (a 0-d object array): that dict is returned.
    """
    path = Path(path)
    with open(path, "rb") as f:
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
            else:  # (3, 0): utf-8 field names; same layout as 2.0
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        except ValueError as e:
            raise SuiteError(f"{path} is not a .npy file ({e})") from None
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        array = _unpickle(f, path)
    if not isinstance(array, np.ndarray) or array.shape != tuple(shape):
        raise SuiteError(f"{path}: the pickled payload is not the {shape} array its header names")
    return array.item() if array.shape == () else array


def load_pth(path: str | Path) -> Any:
    """A `.pth` file with torch.load(weights_only=True): tensors and plain containers only."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickled class/function outside torch's allowlist, or corrupt data
        raise SuiteError(
            f"{path}: refused or unreadable under torch.load(weights_only=True) "
            f"({type(e).__name__}: {_first_line(e)})"
        ) from None
