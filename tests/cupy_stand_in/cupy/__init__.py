"""A strict stand-in for CuPy, for machines without a GPU: device arrays that wrap NumPy arrays and enforce CuPy's
rules, so that code which would fail on a GPU fails here too.

What it enforces, as CuPy does (or more strictly, where npformer's contract asks for it):
- a device array never turns into a NumPy array implicitly: ``np.asarray(dev)`` raises TypeError;
- a NumPy ndarray (0-d included) meeting a device array in an operator, a ufunc or a function raises TypeError;
  Python and NumPy scalars are fine;
- ``dev[...] = host_array`` raises; host index arrays are accepted (CuPy uploads them);
- reductions and full integer indexing return 0-d device arrays, never host scalars;
- the only uploads are ``cupy.asarray`` / ``cupy.array`` / ``ndarray.set``; every device-to-host transfer
  (``.get()``, ``cupy.asnumpy``, ``float()``, ``int()``, ``bool()``, ``.item()``, ``.tolist()``) is counted
  in ``syncs`` (read it with ``sync_count()``);
- only the functions in ``FUNCTIONS`` exist: any other ``cupy.NAME`` raises AttributeError naming the whitelist,
  so nothing falls through to NumPy unnoticed.

It is installed by tests/conftest.py when no real CuPy with a GPU is present (see its docstring).
"""

from __future__ import annotations

import threading
import weakref

import numpy as _np

STAND_IN = True
__version__ = "13.0.0-stand-in"

_lock = threading.Lock()
_syncs = 0


def sync_count() -> int:
    """Device-to-host transfers made so far (each one a synchronisation on a real GPU)."""
    return _syncs


def _sync() -> None:
    global _syncs
    with _lock:
        _syncs += 1


# ---------------------------------------------------------------------------------------------------------------
# wrapping and unwrapping
# ---------------------------------------------------------------------------------------------------------------
_owners: "weakref.WeakValueDictionary[int, ndarray]" = weakref.WeakValueDictionary()


def _wrap(a):
    """A NumPy result -> a device array (NumPy scalars become 0-d arrays); anything else unchanged."""
    if isinstance(a, _np.ndarray):
        obj = object.__new__(ndarray)
        obj._a = a
        if a.base is None:
            _owners[id(a)] = obj  # so that views report this very object as their .base, as CuPy's do
        return obj
    if isinstance(a, _np.generic):
        return _wrap(_np.asarray(a))
    if isinstance(a, tuple):
        return tuple(_wrap(x) for x in a)
    if isinstance(a, list):
        return [_wrap(x) for x in a]
    return a


def _host_error(where: str) -> TypeError:
    return TypeError(f"Unsupported type <class 'numpy.ndarray'> in {where}: a NumPy array cannot meet a CuPy array "
                     "(move it with cupy.asarray first)")


def _unwrap(x, where: str):
    """A device array -> its NumPy array; a NumPy ndarray -> TypeError; lists and tuples element by element."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _np.ndarray):
        raise _host_error(where)
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, where) for v in x)
    return x


def _unwrap_index(key):
    """Indices: device arrays unwrapped, host index arrays accepted (CuPy uploads them)."""
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, tuple):
        return tuple(_unwrap_index(k) for k in key)
    return key


# ---------------------------------------------------------------------------------------------------------------
# the device array
# ---------------------------------------------------------------------------------------------------------------
class _Pointer:
    __slots__ = ("ptr",)

    def __init__(self, ptr: int):
        self.ptr = ptr


def _binary(ufunc):
    def forward(self, other):
        return _wrap(ufunc(self._a, _unwrap(other, f"operator {ufunc.__name__}")))

    def reflected(self, other):
        return _wrap(ufunc(_unwrap(other, f"operator {ufunc.__name__}"), self._a))

    def inplace(self, other):
        ufunc(self._a, _unwrap(other, f"operator {ufunc.__name__}="), out=self._a)
        return self

    return forward, reflected, inplace


class ndarray:
    """A device array: a NumPy array that will not leave the device implicitly."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100.0

    def __init__(self, shape, dtype=float):
        self._a = _np.empty(shape, dtype=dtype)

    # -- description ---------------------------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: _wrap(self._a.T))
    data = property(lambda self: _Pointer(self._a.__array_interface__["data"][0]))

    @property
    def base(self):
        b = self._a.base
        if b is None or not isinstance(b, _np.ndarray):
            return None
        owner = _owners.get(id(b))
        return owner if owner is not None else _wrap(b)

    def __repr__(self) -> str:
        return f"array({_np.array2string(self._a)}, device=stand-in)"

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield _wrap(self._a[i])

    # -- transfers (explicit, counted) --------------------------------------------------------------------------
    def get(self, stream=None, order="C", out=None):
        _sync()
        return self._a.copy()

    def item(self, *args):
        _sync()
        return self._a.item(*args)

    def tolist(self):
        _sync()
        return self._a.tolist()

    def set(self, arr, stream=None):
        """Upload a host array into this one (CuPy's explicit host -> device copy)."""
        self._a[...] = _np.asarray(arr)

    def __float__(self):
        _sync()
        return float(self._a)

    def __int__(self):
        _sync()
        return int(self._a)

    def __bool__(self):
        _sync()
        return bool(self._a)

    def __complex__(self):
        _sync()
        return complex(self._a)

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
                        "NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = ufunc.__name__
        if name not in FUNCTIONS:
            raise AttributeError(f"cupy stand-in: numpy.{name} on a device array is not in the whitelist")
        inputs = _unwrap(inputs, f"numpy.{name}")
        if "out" in kwargs:
            kwargs["out"] = _unwrap(kwargs["out"], f"numpy.{name}")
        return _wrap(getattr(ufunc, method)(*inputs, **kwargs))

    def __array_function__(self, func, types, args, kwargs):
        if func.__name__ not in FUNCTIONS:
            raise AttributeError(f"cupy stand-in: numpy.{func.__name__} on a device array is not in the whitelist")
        return getattr(_module, func.__name__)(*args, **kwargs)

    # -- indexing ----------------------------------------------------------------------------------------------
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap_index(key)])

    def __setitem__(self, key, value):
        if isinstance(value, _np.ndarray):
            raise TypeError("cupy stand-in: dev[...] = a NumPy array is not allowed (CuPy refuses it): upload it "
                            "with cupy.asarray first")
        self._a[_unwrap_index(key)] = _unwrap(value, "__setitem__")

    # -- arithmetic --------------------------------------------------------------------------------------------
    __add__, __radd__, __iadd__ = _binary(_np.add)
    __sub__, __rsub__, __isub__ = _binary(_np.subtract)
    __mul__, __rmul__, __imul__ = _binary(_np.multiply)
    __truediv__, __rtruediv__, __itruediv__ = _binary(_np.true_divide)
    __floordiv__, __rfloordiv__, __ifloordiv__ = _binary(_np.floor_divide)
    __mod__, __rmod__, __imod__ = _binary(_np.remainder)
    __pow__, __rpow__, __ipow__ = _binary(_np.power)
    __matmul__, __rmatmul__, __imatmul__ = _binary(_np.matmul)
    __and__, __rand__, __iand__ = _binary(_np.bitwise_and)
    __or__, __ror__, __ior__ = _binary(_np.bitwise_or)
    __xor__, __rxor__, __ixor__ = _binary(_np.bitwise_xor)
    __lshift__, __rlshift__, __ilshift__ = _binary(_np.left_shift)
    __rshift__, __rrshift__, __irshift__ = _binary(_np.right_shift)
    __lt__ = _binary(_np.less)[0]
    __le__ = _binary(_np.less_equal)[0]
    __gt__ = _binary(_np.greater)[0]
    __ge__ = _binary(_np.greater_equal)[0]
    __eq__ = _binary(_np.equal)[0]
    __ne__ = _binary(_np.not_equal)[0]
    __hash__ = None

    def __neg__(self):
        return _wrap(-self._a)

    def __pos__(self):
        return _wrap(+self._a)

    def __abs__(self):
        return _wrap(_np.abs(self._a))

    def __invert__(self):
        return _wrap(~self._a)


# NumPy methods that CuPy's ndarray has too; each runs on the wrapped array and returns device arrays
_METHODS = ("reshape", "transpose", "swapaxes", "astype", "copy", "sum", "mean", "max", "min", "argmax", "argmin",
            "any", "all", "ravel", "flatten", "fill", "view", "clip", "dot", "cumsum", "nonzero", "argsort",
            "squeeze", "repeat", "std", "var", "prod", "round", "take", "sort", "conj", "diagonal", "trace")


def _method(name):
    def method(self, *args, **kwargs):
        return _wrap(getattr(self._a, name)(*_unwrap(args, f"ndarray.{name}"),
                                            **{k: _unwrap(v, f"ndarray.{name}") for k, v in kwargs.items()}))

    method.__name__ = name
    return method


for _name in _METHODS:
    setattr(ndarray, _name, _method(_name))


# ---------------------------------------------------------------------------------------------------------------
# module functions: the whitelist
# ---------------------------------------------------------------------------------------------------------------
# Functions on device arrays (CuPy has each of them); results are device arrays.
FUNCTIONS = frozenset("""
abs absolute add all allclose amax amin any arange arccos arcsin arctan arctan2 argmax argmin argsort around
array_equal ascontiguousarray atleast_1d atleast_2d bitwise_and bitwise_not bitwise_or bitwise_xor broadcast_arrays
broadcast_to ceil clip concatenate copy copysign copyto cos cosh count_nonzero cumprod cumsum diag diagonal diff
divide dot einsum empty empty_like equal exp expand_dims expm1 eye flip floor floor_divide fmax fmin full full_like
greater greater_equal hypot identity invert isclose isfinite isinf isnan left_shift less less_equal linspace log
log10 log1p log2 logaddexp logical_and logical_not logical_or logical_xor matmul max maximum mean min minimum mod
moveaxis multiply negative nonzero not_equal ones ones_like outer positive power prod put_along_axis ravel
reciprocal remainder repeat reshape right_shift rint round searchsorted sign sin sinh sort split sqrt square squeeze
stack std subtract sum swapaxes take take_along_axis tan tanh tensordot tile transpose tril triu true_divide trunc
unique var vstack hstack where zeros zeros_like cbrt fabs signbit arccosh arcsinh arctanh deg2rad rad2deg
""".split())
# Functions of dtypes and shapes: no array goes in or out, nothing to wrap.
HOST_FUNCTIONS = frozenset("result_type can_cast dtype iinfo finfo broadcast_shapes promote_types isscalar ndim "
                           "shape issubdtype".split())
# Names that are not functions.
CONSTANTS = frozenset("""
float16 float32 float64 int8 int16 int32 int64 uint8 uint16 uint32 uint64 bool_ complex64 complex128 intp
inf nan pi e newaxis integer floating number signedinteger unsignedinteger
""".split())

_module = None  # this module, for __array_function__


def _function(name):
    np_func = getattr(_np, name)

    def function(*args, **kwargs):
        args = _unwrap(args, f"cupy.{name}")
        kwargs = {k: _unwrap(v, f"cupy.{name}") for k, v in kwargs.items()}
        return _wrap(np_func(*args, **kwargs))

    function.__name__ = name
    return function


def _host_function(name):
    np_func = getattr(_np, name)

    def function(*args, **kwargs):  # only dtypes and shapes are read: device arrays pass as what they describe
        return np_func(*(a._a if isinstance(a, ndarray) else a for a in args), **kwargs)

    function.__name__ = name
    return function


def asarray(a, dtype=None, order=None):
    """Host -> device (an upload), or a device array as it is (cast when dtype differs)."""
    if isinstance(a, ndarray):
        return a if dtype is None or _np.dtype(dtype) == a.dtype else _wrap(a._a.astype(dtype))
    host = _np.array(a, dtype=dtype, order=order or "K", copy=True)  # the device owns its copy
    return _wrap(host)


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    if isinstance(a, ndarray):
        return _wrap(_np.array(a._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    return _wrap(_np.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None):
    """Device -> host (counted); a host array passes through, as in CuPy."""
    if isinstance(a, ndarray):
        return a.get()
    return _np.asarray(a)


def get_array_module(*args):
    import sys

    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


_made: dict = {}  # functions made so far (never put in globals(): "abs", "max", "sum" would shadow builtins here)


def __getattr__(name: str):
    if name in _made:
        return _made[name]
    if name in FUNCTIONS or name in HOST_FUNCTIONS:
        _made[name] = (_function if name in FUNCTIONS else _host_function)(name)
        return _made[name]
    if name in CONSTANTS:
        return getattr(_np, name)
    raise AttributeError(f"cupy stand-in: cupy.{name} is not modelled. If npformer needs it and CuPy has it, add it "
                         "to the whitelist in tests/cupy_stand_in/cupy/__init__.py")


# ---------------------------------------------------------------------------------------------------------------
# the device, memory, random numbers
# ---------------------------------------------------------------------------------------------------------------
class _Runtime:
    @staticmethod
    def getDeviceCount() -> int:  # noqa: N802 - CuPy's name
        return 1


class _Device:
    def __init__(self, device=0):
        self.id = device

    def synchronize(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Cuda:
    runtime = _Runtime()
    Device = _Device


cuda = _Cuda()


class _MemoryPool:
    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def free_all_blocks(self) -> None:
        pass


_pool = _MemoryPool()


def get_default_memory_pool():
    return _pool


class _Generator:
    """cupy.random.Generator: draws made on the device (here: NumPy's PCG64 behind the device boundary)."""

    def __init__(self, seed=None):
        self._gen = _np.random.default_rng(seed)

    def random(self, size=None, dtype=_np.float64, out=None):
        return _wrap(_np.asarray(self._gen.random(size, dtype=dtype)))

    def standard_normal(self, size=None, dtype=_np.float64, out=None):
        return _wrap(_np.asarray(self._gen.standard_normal(size, dtype=dtype)))

    def integers(self, low, high=None, size=None, dtype=_np.int64, endpoint=False):
        return _wrap(_np.asarray(self._gen.integers(low, high, size=size, dtype=dtype, endpoint=endpoint)))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=_np.float64):
        return _wrap(_np.asarray(self._gen.uniform(low, high, size).astype(dtype)))


class _Random:
    Generator = _Generator

    @staticmethod
    def default_rng(seed=None):
        return _Generator(seed)


random = _Random()

import sys as _sys  # noqa: E402

_module = _sys.modules[__name__]
