"""Read pickled data without running code: ``np.save``'d objects and plain pickles of arrays and dicts.

``np.load(path, allow_pickle=True)`` and ``pickle.load`` run whatever callable a pickle names (a class whose
``__reduce__`` returns ``os.system`` runs a shell command while loading). Data sets are nevertheless shipped
that way: THINGS-EEG2's files are dicts saved with ``np.save`` (an ``.npy`` whose payload is a pickle), and
decoders re-save them with ``pickle.dump``. :func:`load_pickled` reads both through an unpickler that admits
only numpy arrays, dtypes and scalars, dicts, lists, tuples, strings, bytes, numbers, booleans and None, and
refuses anything else before it is called, with a :class:`~neuroimagen.data.DataFileError` that names what
the file asked for and lists what is allowed.

The ``.npy`` header is parsed with ``numpy.lib.format`` (``read_magic``, ``read_array_header_1_0/2_0``); only
an object array's payload is unpickled. Pickles written by numpy 1.x (``numpy.core.multiarray``) and 2.x
(``numpy._core.multiarray``) and protocols 2 to 5 are read.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path

import numpy as np

from .errors import DataFileError
from .io import _corrupt_msg, _npy_header

ALLOWED = ("numpy arrays, dtypes and scalars, dicts, lists, tuples, strings, bytes, numbers, booleans and None")
NPY_MAGIC = b"\x93NUMPY"


def _numpy_core(module: str):
    """numpy 2's ``numpy._core.<module>``, or numpy 1's ``numpy.core.<module>``: what either wrote resolves."""
    import importlib

    try:
        return importlib.import_module(f"numpy._core.{module}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{module}")


class _Checked:
    """A callable a pickle may name, with nothing to set: no ``__dict__`` and no slots, so a ``BUILD`` on it
    (which sets attributes) fails instead of changing it for later loads, as it could a Python function."""

    __slots__ = ()


class _Reconstruct(_Checked):
    __slots__ = ()

    def __call__(self, subtype, shape, dtype):
        # ndarray.__reduce__ names _reconstruct(ndarray, (0,), b"b"); the state then fills it (ndarray.__setstate__)
        if subtype is not np.ndarray:
            raise pickle.UnpicklingError(f"_reconstruct of {subtype!r}: only numpy.ndarray is allowed")
        return _numpy_core("multiarray")._reconstruct(np.ndarray, shape, dtype)


class _FromBuffer(_Checked):
    __slots__ = ()

    def __call__(self, buf, dtype, shape, order):  # protocol 5's ndarray.__reduce_ex__
        return _numpy_core("numeric")._frombuffer(buf, dtype, shape, order)


class _Latin1Encode(_Checked):
    __slots__ = ()

    def __call__(self, text, encoding="latin1", errors="strict"):
        # Protocol 2 stores bytes as _codecs.encode(text, "latin1"); no other codec is looked up
        if codecs.lookup(encoding).name != "iso8859-1":
            raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}: only 'latin1' is allowed")
        return codecs.encode(text, "latin1", errors)


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _Latin1Encode()}
    scalar = _numpy_core("multiarray").scalar  # a builtin: nothing to set on it either
    for core in ("numpy.core", "numpy._core"):  # what numpy 1.x and 2.x write
        allowed[(f"{core}.multiarray", "_reconstruct")] = _Reconstruct()
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _FromBuffer()
    return allowed


class _Refused(Exception):
    """A global the restricted unpickler does not admit (raised before anything is called)."""


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` whose ``find_class`` admits only what numpy arrays are rebuilt from.

    Every callable a pickle can reach comes through ``find_class`` (``GLOBAL``, ``STACK_GLOBAL``, ``INST``,
    ``OBJ``, the copyreg extension codes); here it returns only ``numpy.ndarray``, ``numpy.dtype``,
    numpy's ``_reconstruct``/``scalar``/``_frombuffer`` and a latin-1 ``_codecs.encode`` (wrapped, where an
    argument could name a type or a codec, in objects with no attributes to set). Anything else raises
    before it is called.
    Persistent ids and out-of-band buffers are refused by :class:`pickle.Unpickler` itself.
    """

    _allowed: dict[tuple[str, str], object] | None = None

    def __init__(self, file, **kwargs):
        kwargs.setdefault("encoding", "latin1")  # numpy arrays pickled by Python 2, as np.load advises
        super().__init__(file, **kwargs)
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise _Refused(f"{module}.{name}")
        return obj


def refusal(name: str, found: str) -> DataFileError:
    """The error for a pickle that names ``found``: what came, what is allowed, and that nothing ran."""
    return DataFileError(f"Refused to load {name!r}: its pickle names {found}, but only {ALLOWED} are allowed "
                         f"(anything else could run code while loading). Nothing in the file was called. If the "
                         f"file is yours, re-save it holding only those, e.g. np.save(path, dict_of_arrays).")


def _unpickle(f, name: str, fmt: str):
    try:
        return RestrictedUnpickler(f).load()
    except _Refused as err:
        raise refusal(name, str(err)) from None
    except MemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - any other failure of the pickle stream is a corrupt file
        reason = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise DataFileError(_corrupt_msg(name, fmt, reason)) from None


def load_pickled(path: str | Path):
    """Load a ``.npy`` file or a pickle without running code.

    Parameters
    ----------
    path : str | Path
        An ``.npy`` file (an object array, e.g. a dict saved with ``np.save``, or a plain numeric array)
        or a pickle (any name, e.g. ``.pkl``, or ``.npy`` as decoders re-save THINGS-EEG2 with
        ``pickle.dump``): told apart by the first bytes.

    Returns
    -------
    obj : object
        For an ``.npy`` of a 0-d object array (``np.save(path, a_dict)``), the object itself (what
        ``np.load(..., allow_pickle=True).item()`` gives); for other ``.npy`` files the array; for a
        pickle, the unpickled object.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    DataFileError
        The pickle names something other than numpy arrays and Python containers (the message names it),
        or the file is neither an ``.npy`` nor a pickle, or it is truncated or corrupt.
    """
    path = Path(path)
    kind = file_kind(path)
    with open(path, "rb") as f:
        if kind == "npy":
            return _load_npy(f, path.name)
        if kind == "pickle":
            return _unpickle(f, path.name, "a pickle")
        head = f.read(len(NPY_MAGIC))
    raise DataFileError(f"Could not read {path.name!r}: expected an .npy file (starting with {NPY_MAGIC!r}) or a "
                        f"pickle (starting with {pickle.PROTO!r}), got a file starting with {head!r}.")


def file_kind(path: str | Path) -> str | None:
    """``"npy"`` (an ``.npy`` header), ``"pickle"`` (a pickle's first opcode) or None, from the first bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No file at {path}.")
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head == NPY_MAGIC:
        return "npy"
    if head[:1] == pickle.PROTO or head[:1] in (b"(", b"}", b"]"):  # protocol 2+, or 0/1 (which start a container)
        return "pickle"
    return None


def _load_npy(f, name: str):
    from numpy.lib import format as npy

    try:
        shape, dtype = _npy_header(f, name)
    except ValueError as err:
        if isinstance(err, DataFileError):
            raise
        raise DataFileError(_corrupt_msg(name, "NumPy array", str(err).splitlines()[0])) from None
    if not dtype.hasobject:
        f.seek(0)
        try:
            return npy.read_array(f, allow_pickle=False)
        except ValueError as err:
            raise DataFileError(_corrupt_msg(name, "NumPy array", str(err).splitlines()[0])) from None
    obj = _unpickle(f, name, "NumPy array")  # np.save pickles the whole object array after the header
    if not isinstance(obj, np.ndarray) or obj.shape != shape or obj.dtype != dtype:
        got = f"shape {obj.shape}, dtype {obj.dtype}" if isinstance(obj, np.ndarray) else f"a {type(obj).__name__}"
        raise DataFileError(_corrupt_msg(name, "NumPy array", f"the header says an array of shape {shape}, dtype "
                                                              f"{dtype}, but the payload holds {got}"))
    return obj.item() if obj.shape == () else obj
