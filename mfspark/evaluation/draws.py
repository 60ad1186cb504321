"""`uniform_draw` of `mfspark.evaluation.split` in numpy, without Spark: single-node studies (and libraries run
in another environment) split exactly as the Spark jobs do."""

from __future__ import annotations

import numpy as np

# xxHash64's primes, as in Spark's XXH64 (`uniform_draws` reproduces `uniform_draw` without Spark).
_PRIME1, _PRIME2, _PRIME3, _PRIME5 = (np.uint64(p) for p in (
    0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5))


def _xxhash64_int(values: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Spark's `XXH64.hashInt(value, seed)` (4-byte input) on arrays; uint64 arithmetic wraps as Java's long."""
    with np.errstate(over="ignore"):
        h = seed + _PRIME5 + np.uint64(4)
        h ^= (values.astype(np.int64).astype(np.uint64) & np.uint64(0xFFFFFFFF)) * _PRIME1
        h = ((h << np.uint64(23)) | (h >> np.uint64(41))) * _PRIME2 + _PRIME3
        h ^= h >> np.uint64(33)
        h *= _PRIME2
        h ^= h >> np.uint64(29)
        h *= _PRIME3
        return h ^ (h >> np.uint64(32))


def uniform_draws(seed: int, user_ids: np.ndarray, movie_ids: np.ndarray) -> np.ndarray:
    """Spark's `uniform_draw(seed)` (xxhash64(seed, user_id, movie_id) -> [0, 1)) of int ids."""
    # xxhash64(a, b, c) hashes each column with the previous hash as seed, starting from Spark's 42.
    h = _xxhash64_int(np.full(len(user_ids), seed), np.full(len(user_ids), 42, dtype=np.uint64))
    h = _xxhash64_int(np.asarray(movie_ids), _xxhash64_int(np.asarray(user_ids), h))
    return (h >> np.uint64(11)).astype(np.float64) / float(2**53)


def split_masks(user_ids: np.ndarray, movie_ids: np.ndarray, test_fraction: float, seed: int,
                validation_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(test, validation) masks: `random_split(ratings, test_fraction, seed)`'s test part, and the validation part
    `mfspark tune` carves from the rest (`random_split(train, test_fraction, validation_seed)`)."""
    test = uniform_draws(seed, user_ids, movie_ids) < test_fraction
    return test, ~test & (uniform_draws(validation_seed, user_ids, movie_ids) < test_fraction)
