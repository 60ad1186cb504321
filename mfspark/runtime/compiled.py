"""numba compilation for the compiled kernels of ALS and of top-N, and the id hash both partition by.

Spark-free; below every package that compiles a kernel (`models.als.kernels`, `recommend.kernels`),
so neither imports the other for them.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np

from mfspark.runtime.spark_internals import cached_kernel

# Let LLVM reorder the dot-product sums so they vectorise; no assumptions about NaN or infinity.
_FASTMATH = {"reassoc", "contract"}


def compiled(fastmath: bool = True, inline: bool = False) -> Callable[[Callable], Callable]:
    """numba-compile a kernel, cached on disk where numba can write its cache, else in memory.

    `inline`: a helper that numba pastes into each compiled caller (`inline="always"`, at numba's
    IR level), so sharing it between kernels costs no call in their per-entity loops.

    numba caches beside the kernel's source file, under NUMBA_CACHE_DIR or the user cache directory, and for
    code shipped in a zip (`spark-submit --py-files`) under the user cache directory without
    checking that it can write there; on an executor whose home is read-only or missing the
    first call would then fail. So the cache directory is tried once (numba's private locator,
    in `spark_internals.cached_kernel`), and a kernel that cannot be cached compiles in memory
    (about 2.5 s once per Python worker, logged as a warning).
    """

    def wrap(func):
        options = {"nogil": True, "fastmath": _FASTMATH if fastmath else False,
                   "inline": "always" if inline else "never"}
        return cached_kernel(lambda: numba.njit(cache=True, **options)(func), lambda: numba.njit(**options)(func),
                             func.__name__)

    return wrap


# The splitmix64 finaliser's constants (shared by the numpy and the compiled form).
_MIX_ADD, _MIX_1, _MIX_2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHIFT_0, _SHIFT_1, _SHIFT_2 = np.uint64(30), np.uint64(27), np.uint64(31)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a well-mixed 64-bit hash, vectorised (wraps modulo 2^64)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _MIX_ADD
        z = (z ^ (z >> _SHIFT_0)) * _MIX_1
        z = (z ^ (z >> _SHIFT_1)) * _MIX_2
        return z ^ (z >> _SHIFT_2)


@compiled()
def splitmix64_one(x):  # pragma: no cover - compiled
    """`splitmix64` of one uint64, for compiled loops (numpy's form makes ~10 passes over an array)."""
    z = x + _MIX_ADD
    z = (z ^ (z >> _SHIFT_0)) * _MIX_1
    z = (z ^ (z >> _SHIFT_1)) * _MIX_2
    return z ^ (z >> _SHIFT_2)
