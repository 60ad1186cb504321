"""Numeric kernel of blockwise top-N: score a query block against a candidate block, keep the best N.

Nothing here knows about Spark. Queries are users (or movies, for audiences and similar
movies), candidates are the rows they are scored against; a score is the dot product of
the two factor rows. A query block's running top-N (`TopN`) is updated by one candidate
block at a time, so a task can stream any number of candidate blocks through it.

The kernel never holds more than one tile of scores: for each candidate tile (TILE
candidates, rank x TILE float32, kept in cache) it scores one query at a time into a
TILE-long buffer and compares the scores with the query's current N-th best in vectorised
chunks; only a chunk holding a score at or above that threshold is scanned for insertions.
After the first few tiles almost no chunk is, so selection costs about one compare per
score. Exclusions are checked only there, for a score about to enter the list (a binary
search in the query's sorted excluded ids): a few dozen lookups per query instead of
masking every excluded candidate (ml-10m: 143 per user) in every tile. (A plain numpy
loop of GEMM + mask + `argpartition` spends most of its time selecting: 99.5 s for
162k x 59k, SHARED_NOTES.)

Order: higher score first, equal scores by ascending candidate id, so lists are unique and
do not depend on blocking. NaN scores and excluded candidates are never selected.

Grouped lists (genre rows): a query may keep several lists (`Lists`), each over the
candidates of one group (a candidate's groups are bits of an int64 mask). The query's tile
of scores is computed once and offered to each of its lists, so k lists per query cost one
scoring pass, not k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mfspark.runtime.compiled import compiled, splitmix64_one

# Candidates scored per query per pass (rank 10: a 20 KB tile); small, so a finished query stops early.
TILE = 512
# Scores compared with the threshold at once before any of them is looked at individually.
CHUNK = 16


@dataclass
class TopN:
    """Running best-N lists of a block of queries (one row per list: per query unless `Lists` say
    otherwise), best first; row l holds counts[l] valid entries."""

    scores: np.ndarray  # (num_queries, n) float32
    ids: np.ndarray  # (num_queries, n) int64 candidate ids
    counts: np.ndarray  # (num_queries,) int64

    @classmethod
    def empty(cls, num_queries: int, n: int) -> TopN:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return cls(np.full((num_queries, n), -np.inf, np.float32), np.full((num_queries, n), -1, np.int64),
                   np.zeros(num_queries, np.int64))

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(query row, rank 1.., candidate id, score) of every valid entry, queries in row order."""
        n = self.scores.shape[1]
        valid = np.arange(n)[None, :] < self.counts[:, None]
        rows, ranks = np.nonzero(valid)
        return rows, (ranks + 1).astype(np.int32), self.ids[valid], self.scores[valid]


# Group of a list that takes every candidate; a candidate mask of ALL is in every group.
ALL = -1


@dataclass(frozen=True)
class Lists:
    """Which lists each query keeps: query q owns list rows indptr[q]:indptr[q + 1] of the `TopN`;
    list l takes the candidates in group groups[l] (0..63), or every candidate when it is `ALL`."""

    indptr: np.ndarray  # (num_queries + 1,) int64
    groups: np.ndarray  # (num_lists,) int64

    @classmethod
    def one_each(cls, num_queries: int) -> Lists:
        """One list over all candidates per query (plain top-N)."""
        return cls(np.arange(num_queries + 1, dtype=np.int64), np.full(num_queries, ALL, np.int64))

    def owners(self) -> np.ndarray:
        """The query row of each list."""
        return np.repeat(np.arange(len(self.indptr) - 1), np.diff(self.indptr))

    def masks(self) -> np.ndarray:
        if np.any((self.groups < ALL) | (self.groups > 63)):
            raise ValueError(f"list groups must be 0..63 or ALL, got {sorted(set(self.groups.tolist()))[:5]}")
        return np.where(self.groups == ALL, ALL, np.left_shift(1, np.maximum(self.groups, 0))).astype(np.int64)


def update_top_n(top: TopN, queries: np.ndarray, candidate_ids: np.ndarray, candidates: np.ndarray,
                 exclude_indptr: np.ndarray | None = None, exclude_ids: np.ndarray | None = None,
                 lists: Lists | None = None, candidate_groups: np.ndarray | None = None) -> None:
    """Merge one candidate block into the queries' running top-N lists (in place).

    queries: (num_queries, rank); candidates: (num_candidates, rank) with unique
    `candidate_ids` in any order; query q never gets the candidate ids
    exclude_ids[exclude_indptr[q]:exclude_indptr[q+1]] (ids absent from this block are
    ignored; rows already sorted ascending, as `exclusion_csr` builds them, are used as they
    are). lists: the lists of each query (default one per query; `top` has one row per
    list); candidate_groups: int64 bit masks of the candidates' groups (default: every
    group). Scores are float32.
    """
    lists = lists or Lists.one_each(len(queries))
    if top.scores.shape[0] != len(lists.groups) or len(lists.indptr) != len(queries) + 1:
        raise ValueError(f"{len(queries)} queries with {len(lists.groups)} lists, but top holds {top.scores.shape[0]}")
    candidate_ids = np.asarray(candidate_ids, dtype=np.int64)
    candidates = np.asarray(candidates, dtype=np.float32)
    candidate_groups = np.full(len(candidate_ids), ALL, np.int64) if candidate_groups is None \
        else np.asarray(candidate_groups, dtype=np.int64)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    _check_shapes(queries, candidates, candidate_ids, candidate_groups)
    norms = np.sqrt(np.einsum("ij,ij->i", candidates, candidates, dtype=np.float64))
    order = np.lexsort((candidate_ids, -norms))  # largest norm first: see _score_and_select
    if exclude_indptr is None:
        exclude_indptr, exclude_ids = np.zeros(len(queries) + 1, np.int64), np.zeros(0, np.int64)
    else:
        exclude_indptr = np.asarray(exclude_indptr, dtype=np.int64)
        exclude_ids = np.asarray(exclude_ids)  # int32 ids (as topn's blocks carry them) stay int32: half the bytes
        exclude_ids = _sorted_rows(exclude_indptr, exclude_ids if exclude_ids.dtype == np.int32
                                   else exclude_ids.astype(np.int64, copy=False))
    query_norms = np.sqrt(np.einsum("ij,ij->i", queries, queries, dtype=np.float64))
    _score_and_select(queries, query_norms, np.ascontiguousarray(candidates[order].T), candidate_ids[order],
                      candidate_groups[order], norms[order][::TILE].copy(), exclude_indptr, exclude_ids,
                      np.asarray(lists.indptr, np.int64), lists.masks(), top.scores, top.ids, top.counts, TILE)


def _check_shapes(queries: np.ndarray, candidates: np.ndarray, candidate_ids: np.ndarray,
                  candidate_groups: np.ndarray) -> None:
    """The compiled loop trusts the shapes: a query longer than the candidates would read past their array."""
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"queries {queries.shape} and candidates {candidates.shape} must be (rows, rank) "
                         "arrays of one rank")
    if not len(candidate_ids) == len(candidate_groups) == len(candidates):
        raise ValueError(f"{len(candidates)} candidates with {len(candidate_ids)} ids and "
                         f"{len(candidate_groups)} group masks")


def exclusion_csr(rows: np.ndarray, ids: np.ndarray, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, ids) of `ids` grouped by `rows` (0 <= row < num_rows), ascending within each row, ids' dtype kept.

    A counting sort by row, then a sort of each row's ids: linear in the pairs apart from the
    short per-row sorts (numpy's lexsort of the same pairs took 10x longer).
    """
    counts = np.bincount(rows, minlength=num_rows)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, _group_and_sort(np.asarray(rows, np.int64), np.asarray(ids), indptr)


@compiled()
def _group_and_sort(rows, ids, indptr):  # pragma: no cover - compiled
    grouped = np.empty(len(ids), ids.dtype)
    fill = indptr[:-1].copy()
    for k in range(len(ids)):
        grouped[fill[rows[k]]] = ids[k]
        fill[rows[k]] += 1
    for r in range(len(indptr) - 1):
        grouped[indptr[r]:indptr[r + 1]].sort()
    return grouped


def _sorted_rows(indptr: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """`ids` with every CSR row ascending (the array itself when they already are)."""
    if len(ids) < 2:
        return ids
    descending = ids[1:] < ids[:-1]
    row_starts = np.zeros(len(ids), np.bool_)
    row_starts[indptr[1:-1][indptr[1:-1] < len(ids)]] = True
    if not np.any(descending & ~row_starts[1:]):
        return ids
    return _group_and_sort(np.repeat(np.arange(len(indptr) - 1), np.diff(indptr)), ids, indptr)


def group_by_block(ids: np.ndarray, num_blocks: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, bounds): the rows of `ids` grouped by `models.als.inblock.block_of(ids, num_blocks)`.

    Block b's rows are order[bounds[b]:bounds[b + 1]], in input order. One compiled pass
    hashes and counts, a second places. A run of equal ids is hashed once (ratings usually
    arrive grouped by user, and the 64-bit modulo dominates the hash): 10M ratings 0.05 s
    against 1.1 s for numpy's hash plus a stable argsort.
    """
    return _group_by_block(np.asarray(ids, dtype=np.int64).view(np.uint64), np.uint64(num_blocks))


@compiled()
def _group_by_block(ids, num_blocks):  # pragma: no cover - compiled
    blocks = np.empty(len(ids), np.int64)
    bounds = np.zeros(int(num_blocks) + 1, np.int64)
    for k in range(len(ids)):
        blocks[k] = blocks[k - 1] if k > 0 and ids[k] == ids[k - 1] else splitmix64_one(ids[k]) % num_blocks
        bounds[blocks[k] + 1] += 1
    bounds = np.cumsum(bounds)
    fill = bounds[:-1].copy()
    order = np.empty(len(ids), np.int64)
    for k in range(len(ids)):
        order[fill[blocks[k]]] = k
        fill[blocks[k]] += 1
    return order, bounds


# Relative slack on the Cauchy-Schwarz bound for float32 rounding of the scores (about rank x 6e-8).
BOUND_SLACK = 1e-4


@compiled()
def _score_and_select(queries, query_norms, candidates_t, candidate_ids, candidate_groups, tile_norms,
                      exclude_indptr, exclude_ids, list_indptr, list_masks, top_scores, top_ids, top_counts,
                      tile):  # pragma: no cover - compiled
    """For each candidate tile and each query: scores into a buffer, offered to each of the query's lists.

    Candidates come in order of decreasing norm, so x.y <= |x| |y| <= |x| * (the tile's first
    norm) bounds every later score of a query: once that bound is below the N-th best of
    every list of the query, no later tile can enter them and the query is finished.
    """
    num_queries, rank = queries.shape
    num_candidates = candidates_t.shape[1]
    n = top_scores.shape[1]
    scores = np.empty(tile, np.float32)
    finished = np.zeros(num_queries, np.bool_)
    for t in range(len(tile_norms)):
        lo = t * tile
        width = min(tile, num_candidates - lo)
        for q in range(num_queries):
            if finished[q]:
                continue
            bound = query_norms[q] * tile_norms[t] * (1.0 + BOUND_SLACK)
            finished[q] = True
            for lst in range(list_indptr[q], list_indptr[q + 1]):
                if top_counts[lst] < n or not bound < top_scores[lst, n - 1]:
                    finished[q] = False
            if finished[q]:
                continue
            x = queries[q]
            first = candidates_t[0]
            for j in range(width):
                scores[j] = x[0] * first[lo + j]
            for p in range(1, rank):
                row, xp = candidates_t[p], x[p]
                for j in range(width):
                    scores[j] += xp * row[lo + j]
            excluded = exclude_ids[exclude_indptr[q]:exclude_indptr[q + 1]]
            for lst in range(list_indptr[q], list_indptr[q + 1]):
                _select(scores, width, candidate_ids[lo:lo + width], candidate_groups[lo:lo + width],
                        list_masks[lst], top_scores[lst], top_ids[lst], top_counts, lst, excluded)


@compiled()
def _select(scores, width, ids, groups, mask, best_scores, best_ids, counts, lst,
            excluded):  # pragma: no cover - compiled
    """Insert the tile's scores that beat list `lst`'s current N-th best into it, skipping the
    candidates in `excluded` (sorted ids) and those outside the list's groups (`mask`)."""
    n = len(best_scores)
    count = counts[lst]
    threshold = best_scores[n - 1] if count == n else -np.inf
    for lo in range(0, width, CHUNK):
        hi = min(lo + CHUNK, width)
        above = 0
        for j in range(lo, hi):  # branch-free count: vectorises
            above += scores[j] >= threshold
        if above == 0:
            continue
        for j in range(lo, hi):
            score = scores[j]
            if not score >= threshold or (groups[j] & mask) == 0:
                continue
            candidate = ids[j]
            if count == n and score == threshold and candidate > best_ids[n - 1]:
                continue  # an equal score loses to the smaller id already kept
            at = np.searchsorted(excluded, candidate)
            if at < len(excluded) and excluded[at] == candidate:
                continue
            slot = count if count < n else n - 1
            while slot > 0 and (best_scores[slot - 1] < score
                                or (best_scores[slot - 1] == score and best_ids[slot - 1] > candidate)):
                best_scores[slot] = best_scores[slot - 1]
                best_ids[slot] = best_ids[slot - 1]
                slot -= 1
            best_scores[slot] = score
            best_ids[slot] = candidate
            if count < n:
                count += 1
            if count == n:
                threshold = best_scores[n - 1]
    counts[lst] = count
