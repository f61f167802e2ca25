"""Read pickled data without running code: ``np.save``'d objects and plain pickles of arrays and dicts.

``np.load(path, allow_pickle=True)`` and ``pickle.load`` run whatever callable a pickle names (a class whose
``__reduce__`` returns ``os.system`` runs a shell command while loading). Data sets are nevertheless shipped
that way: THINGS-EEG2's files are dicts saved with ``np.save`` (an ``.npy`` whose payload is a pickle), and
decoders re-save them with ``pickle.dump``. :func:`load_pickled` reads both through an unpickler that admits
only numpy arrays, dtypes and scalars, dicts, lists, tuples, strings, bytes, numbers, booleans and None, and
refuses anything else before it is called, with a :class:`~neuroimagen.data.DataFileError` that names what
the file asked for and lists what is allowed.

Admitting numpy's own names is not enough: ``dtype.__setstate__`` and ``ndarray.__setstate__`` trust the
state a file gives them (an object dtype whose flags say it holds no objects, an object array given a list
shorter than its shape), and numpy then reads raw bytes as Python objects: ``pickle.loads`` of such a file
crashes. Here those names are stand-ins that check the state (dtype name, byte order, shape, data size,
item count) and build the arrays from dtypes numpy makes itself; dtypes are limited to booleans, integers,
floats, complex numbers, strings and Python objects (no structured or datetime dtypes).

The ``.npy`` header is parsed with ``numpy.lib.format`` (``read_magic``, ``read_array_header_1_0/2_0``); a
numeric array is read with ``allow_pickle=False`` and only an object array's payload is unpickled. Pickles
written by numpy 1.x (``numpy.core.multiarray``) and 2.x (``numpy._core.multiarray``), by Python 2, and with
protocols 0 to 5 are read.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import struct
from pathlib import Path

import numpy as np

from .errors import DataFileError
from .io import _corrupt_msg, _npy_header

ALLOWED = ("numpy arrays, dtypes and scalars, dicts, lists, tuples, strings, bytes, numbers, booleans and None")
DTYPES = "booleans, integers, floats, complex numbers, strings (U, S) and Python objects (O)"
NPY_MAGIC = b"\x93NUMPY"
_DTYPE_SPEC = re.compile(r"[biufcSUO]\d+")  # what dtype.__reduce__ names: 'f8', 'U7', 'S3', 'b1', 'O8'


class _Checked:
    """What a pickle may name instead of numpy's own callables: objects with no attribute to set (no
    ``__dict__``, no slots), so that a ``BUILD`` on one fails instead of changing it for later loads."""

    __slots__ = ()


class _NDArray(_Checked):
    """Stands for ``numpy.ndarray``, which a pickle names only as ``_reconstruct``'s first argument."""

    __slots__ = ()


class _DTypeFactory(_Checked):
    """Stands for ``numpy.dtype``: records the dtype a pickle names, see :class:`_DType`."""

    __slots__ = ()

    def __call__(self, spec, align=False, copy=True):
        return _DType(spec)


class _DType:
    """A dtype named by a pickle. numpy's own ``dtype.__setstate__`` takes flags, sizes and fields from the
    file, and a dtype whose flags deny the Python objects it holds makes numpy read raw bytes as pointers (a
    crash, or worse). So the state is only checked here, and the dtype numpy uses is made afresh from its
    name and byte order, when first used."""

    __slots__ = ("_spec", "_byteorder", "_dtype")

    def __init__(self, spec):
        if not isinstance(spec, str) or not _DTYPE_SPEC.fullmatch(spec):
            raise pickle.UnpicklingError(f"dtype {spec!r}: only {DTYPES} are allowed")
        self._spec, self._byteorder, self._dtype = spec, "=", None

    def __setstate__(self, state):
        # dtype.__reduce__'s state: (3, byte order, subarray, names, fields, elsize, alignment, flags)
        if self._dtype is not None:
            raise pickle.UnpicklingError("a dtype's state was set after the dtype was used")
        if not isinstance(state, tuple) or len(state) != 8 or state[0] != 3 or state[1] not in ("<", ">", "|", "=") \
                or not isinstance(state[5], int):
            raise pickle.UnpicklingError(f"dtype {self._spec!r} with a state unlike numpy's (3, byte order, "
                                         f"subarray, names, fields, item size, alignment, flags)")
        if state[2:5] != (None, None, None):
            raise pickle.UnpicklingError(f"dtype {self._spec!r} with fields or subarrays: only {DTYPES}, without "
                                         f"fields or subarrays, are allowed")
        if state[5] not in (-1, np.dtype(self._spec).itemsize):
            raise pickle.UnpicklingError(f"dtype {self._spec!r} with an item size of {state[5]} bytes")
        self._byteorder = state[1]

    def resolve(self) -> np.dtype:
        if self._dtype is None:
            dtype = np.dtype(self._spec)
            self._dtype = dtype.newbyteorder(self._byteorder) if self._byteorder in "<>" else dtype
        return self._dtype


def _dtype(obj, what: str) -> np.dtype:
    if not isinstance(obj, _DType):
        raise pickle.UnpicklingError(f"{what} with {type(obj).__name__} {obj!r:.100} for a dtype")
    return obj.resolve()


def _shape(obj, what: str) -> tuple[int, ...]:
    if not isinstance(obj, tuple) or not all(type(n) is int and n >= 0 for n in obj):
        raise pickle.UnpicklingError(f"{what} with the shape {obj!r:.100}")
    return obj


class _Array:
    """An array named by a pickle (``_reconstruct``, then ``BUILD`` with its state). numpy's own
    ``ndarray.__setstate__`` trusts the state (an object array given a shorter list reads past its end), so
    the state is checked here and the array made from a dtype of :class:`_DType` and data of the right size."""

    __slots__ = ("array",)

    def __init__(self):
        self.array = None

    def __setstate__(self, state):
        # ndarray.__reduce__'s state: (1, shape, dtype, is_fortran, data)
        if self.array is not None:
            raise pickle.UnpicklingError("an array's state was set twice")
        if not isinstance(state, tuple) or len(state) != 5 or state[0] != 1 or state[3] not in (False, True):
            raise pickle.UnpicklingError("an array with a state unlike numpy's (1, shape, dtype, is_fortran, data)")
        _, shape, dtype, fortran, data = state
        fortran = bool(fortran)
        shape, dtype = _shape(shape, "an array"), _dtype(dtype, "an array")
        n = math.prod(shape)
        if dtype.hasobject:  # the items, in C order, as a list
            if not isinstance(data, list) or len(data) != n:
                got = f"{len(data)} items" if isinstance(data, list) else f"a {type(data).__name__}"
                raise pickle.UnpicklingError(f"an object array of shape {shape} ({n} items) with {got}")
            array = np.empty(n, dtype=object)
            for i, item in enumerate(data):
                array[i] = item
            self.array = array.reshape(shape)
            return
        if isinstance(data, str):  # Python 2's str, decoded as latin-1 by the unpickler
            data = data.encode("latin1")
        if not isinstance(data, bytes | bytearray) or len(data) != n * dtype.itemsize:
            got = f"{len(data)} bytes" if isinstance(data, bytes | bytearray) else f"a {type(data).__name__}"
            raise pickle.UnpicklingError(f"an array of shape {shape}, {dtype} ({n * dtype.itemsize} bytes) with "
                                         f"{got}")
        array = np.empty(0, dtype=np.int8)
        array.__setstate__((1, shape, dtype, fortran, data))  # checked above; numpy keeps the bytes, no copy
        self.array = array


class _Reconstruct(_Checked):
    __slots__ = ()

    def __call__(self, subtype, shape, dtype):
        # ndarray.__reduce__ names _reconstruct(ndarray, (0,), b"b"); BUILD then gives the state
        if not isinstance(subtype, _NDArray):
            raise pickle.UnpicklingError(f"_reconstruct of {subtype!r:.100}: only numpy.ndarray is allowed")
        return _Array()


class _FromBuffer(_Checked):
    __slots__ = ()

    def __call__(self, buf, dtype, shape, order):  # protocol 5's ndarray.__reduce_ex__ (data in-band)
        dtype, shape = _dtype(dtype, "_frombuffer"), _shape(shape, "_frombuffer")
        n = math.prod(shape) * dtype.itemsize
        if dtype.hasobject or order not in ("C", "F") or not isinstance(buf, bytes | bytearray) or len(buf) != n:
            raise pickle.UnpicklingError(f"_frombuffer of {type(buf).__name__} as {dtype}, shape {shape}, order "
                                         f"{order!r:.10}")
        return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order)


class _Scalar(_Checked):
    __slots__ = ()

    def __call__(self, dtype, data=None):  # a numpy scalar: its dtype and its bytes
        dtype = _dtype(dtype, "a numpy scalar")
        if dtype.hasobject:
            return data  # what numpy's scalar() gives for an object dtype
        if isinstance(data, str):
            data = data.encode("latin1")
        if not isinstance(data, bytes) or len(data) != dtype.itemsize:
            raise pickle.UnpicklingError(f"a numpy scalar of {dtype} with {type(data).__name__} {data!r:.50}")
        return np.frombuffer(data, dtype=dtype, count=1)[0]


class _Latin1Encode(_Checked):
    __slots__ = ()

    def __call__(self, text, encoding="latin1", errors="strict"):
        # Protocol 2 stores bytes as _codecs.encode(text, "latin1"); no other codec is looked up
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r:.50}: only 'latin1' is allowed")
        return text.encode("latin1")


class _Builtin(_Checked):
    """A builtin type, called only with arguments of the types protocols 0-4 give it (``set([...])``,
    ``complex(1.0, 2.0)``, ``bytearray(b"...")``, ``bytes()``)."""

    __slots__ = ()
    target: type
    arg_types: tuple[type, ...]

    def __call__(self, *args):
        if len(args) != len(self.arg_types) or not all(isinstance(a, t) for a, t in zip(args, self.arg_types)):
            raise pickle.UnpicklingError(f"{self.target.__name__} of {', '.join(type(a).__name__ for a in args)}")
        return self.target(*args)


def _builtin(target: type, *arg_types: type) -> _Builtin:
    # class attributes, not slots: a BUILD on the instance cannot change them
    return type(f"_{target.__name__}", (_Builtin,), {"__slots__": (), "target": target, "arg_types": arg_types})()


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): _NDArray(), ("numpy", "dtype"): _DTypeFactory(),
                                              ("_codecs", "encode"): _Latin1Encode()}
    for builtins in ("builtins", "__builtin__"):  # Python 3 and 2 names (find_class sees them unmapped)
        allowed.update({(builtins, "set"): _builtin(set, list), (builtins, "frozenset"): _builtin(frozenset, list),
                        (builtins, "complex"): _builtin(complex, float, float), (builtins, "bytes"): _builtin(bytes),
                        (builtins, "bytearray"): _builtin(bytearray, bytes)})
    for core in ("numpy.core", "numpy._core"):  # what numpy 1.x and 2.x write
        allowed[(f"{core}.multiarray", "_reconstruct")] = _Reconstruct()
        allowed[(f"{core}.multiarray", "scalar")] = _Scalar()
        allowed[(f"{core}.numeric", "_frombuffer")] = _FromBuffer()
    return allowed


class _Refused(Exception):
    """A global the restricted unpickler does not admit (raised before anything is called)."""


class _Bounded:
    """The file as the unpickler reads it: no read asks for more than the file has left, so a length field
    (``BINBYTES8``, ``FRAME``) cannot make the reader allocate more than the file holds."""

    def __init__(self, f):
        self._f = f
        start = f.tell()
        self.end = f.seek(0, os.SEEK_END)
        f.seek(start)

    def left(self) -> int:
        return self.end - self._f.tell()

    def read(self, n: int = -1) -> bytes:
        return self._f.read(self.left() if n is None or n < 0 else min(n, self.left()))

    def readline(self, size: int = -1) -> bytes:
        return self._f.readline(size)

    def readinto(self, b) -> int:
        return self._f.readinto(b)


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that admits what numpy arrays are rebuilt from, and checks it.

    Every callable a pickle can reach comes through ``find_class`` (``GLOBAL``, ``STACK_GLOBAL``, ``INST``,
    ``OBJ``, the copyreg extension codes). Here it returns stand-ins for ``numpy.ndarray``, ``numpy.dtype``,
    numpy's ``_reconstruct``, ``scalar`` and ``_frombuffer``, a latin-1 ``_codecs.encode`` and a few builtin
    types with fixed argument types; anything else raises before it is called. The stand-ins check what the
    pickle gives them (dtype names and byte order, shapes, data sizes, item counts) and make the arrays from
    dtypes numpy builds itself, never from a state the file dictates; :meth:`load` returns the result with
    real numpy objects in their place. Persistent ids and out-of-band buffers are refused by the base class.

    It is Python's pure-Python unpickler (``pickle._Unpickler``): the C one sizes its memo by the largest
    index a file names (``LONG_BINPUT 2000000000`` allocates 16 GB from a few bytes) and its
    ``READONLY_BUFFER`` can free a buffer still in use; here the memo is a dict, reads are bounded by the
    file's size (:class:`_Bounded`) and ``BYTEARRAY8`` is checked before it allocates. The data sets hold a
    few large arrays, read as one block each, so the pure-Python reader is not slower where it matters.
    """

    _allowed: dict[tuple[str, str], object] | None = None
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, **kwargs):
        kwargs.setdefault("encoding", "latin1")  # numpy arrays pickled by Python 2, as np.load advises
        self._bounded = _Bounded(file)
        super().__init__(self._bounded, **kwargs)
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()

    def find_class(self, module: str, name: str):
        obj = self._allowed.get((module, name))
        if obj is None:
            raise _Refused(f"{module}.{name}")
        return obj

    def load(self):
        return _finish(super().load(), {})

    def _load_bytearray8(self):
        (n,) = struct.unpack("<Q", self.read(8))
        if n > self._bounded.end:  # bytearray(n) fills n bytes before reading them: never more than the file
            raise pickle.UnpicklingError(f"BYTEARRAY8 of {n} bytes, more than the file holds")
        b = bytearray(n)
        self.readinto(b)
        self.append(b)

    dispatch[pickle.BYTEARRAY8[0]] = _load_bytearray8


def _finish(obj, done: dict):
    """``obj`` with the stand-ins of arrays and dtypes replaced by the numpy objects, at any depth (lists and
    dicts in place, tuples and sets rebuilt)."""
    if isinstance(obj, _Array):
        if obj.array is None:
            raise pickle.UnpicklingError("an array without its state")
        obj = obj.array
    elif isinstance(obj, _DType):
        return obj.resolve()
    if not isinstance(obj, list | dict | tuple | set | frozenset | np.ndarray) or id(obj) in done:
        return done.get(id(obj), obj)
    if isinstance(obj, np.ndarray):
        done[id(obj)] = obj
        if obj.dtype.hasobject:
            for i, item in enumerate(obj.flat):
                new = _finish(item, done)
                if new is not item:
                    obj.flat[i] = new
        return obj
    if isinstance(obj, list):
        done[id(obj)] = obj
        obj[:] = [_finish(item, done) for item in obj]
        return obj
    if isinstance(obj, dict):
        done[id(obj)] = obj
        for key in obj:
            if isinstance(key, _Array | _DType):
                raise pickle.UnpicklingError("an array or dtype as a dict key")
            obj[key] = _finish(obj[key], done)
        return obj
    items = [_finish(item, done) for item in obj]
    if isinstance(obj, set | frozenset) and any(isinstance(i, _Array | _DType) for i in obj):
        raise pickle.UnpicklingError("an array or dtype in a set")
    new = obj if all(a is b for a, b in zip(items, obj, strict=True)) else type(obj)(items)
    done[id(obj)] = new
    return new


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
        text = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        reason = text if isinstance(err, pickle.UnpicklingError) and text else f"{type(err).__name__} {text}".strip()
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
    if head[:1] == pickle.PROTO or head[:1] in (b"(", b"}", b"]", b")", b"c"):  # 2+, or 0/1: a container or a global
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
