"""The one unpickler bench uses on files it did not write: it builds numpy arrays and the
plain containers around them (dict, list, tuple, bytes, str, numbers) and nothing else.

Pickles come from outside (torchvision's CIFAR batches in a data root, the MNIST pickle in
a registry wheel); `pickle.load` on them would run whatever callable they name. Here every
global a pickle asks for is refused unless it is one of numpy's array constructors, so a
crafted pickle fails with `pickle.UnpicklingError` before any of its code can run.
"""

from __future__ import annotations

import io
import pickle  # nosec B403 - subclassed below to refuse every global but numpy arrays

import numpy as np


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct      # numpy >= 2
    except ImportError:                                       # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can build numpy arrays and nothing else.

    Only `numpy.ndarray`, `numpy.dtype` and `numpy.core.multiarray._reconstruct` (under its
    numpy 1 and numpy 2 module names) may be looked up; any other global, such as
    `os.system` or `builtins.eval`, is refused before it can be called.
    """

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: "
                                         f"only numpy arrays may be unpickled here")
        if name == "ndarray":
            return np.ndarray
        if name == "dtype":
            return np.dtype
        return _numpy_reconstruct()


def loads_numpy_only(data: bytes, *, encoding: str = "ASCII"):
    """Unpickle `data` with `NumpyOnlyUnpickler` (`encoding` as for `pickle.loads`)."""
    return NumpyOnlyUnpickler(io.BytesIO(data), encoding=encoding).load()
