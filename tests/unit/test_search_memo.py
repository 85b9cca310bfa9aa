"""Calibration's memo of nearest-neighbour answers (inspector/methods/search_memo.py): inside a
``reusing`` scope, a row bitwise equal to one searched in a ``remembering`` scope takes its answer,
every other row is searched, and the answers are the searcher's own."""
from __future__ import annotations

import numpy as np

from inspector.methods import search_memo
from inspector.methods.knn import ExactSearch
from inspector.methods.search_memo import SearchMemo


class CountingSearch(ExactSearch):
    """The exact searcher, counting the rows it is asked about."""

    def __init__(self, bank):
        super().__init__(bank)
        self.rows = 0

    def search(self, queries, chunk=4096):
        self.rows += len(queries)
        return super().search(queries, chunk)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(300, 24)).astype(np.float32), rng.normal(size=(500, 24)).astype(np.float32)


def test_rows_seen_before_are_answered_from_memory_and_the_rest_searched():
    bank, clean = _data()
    searcher, memo = CountingSearch(bank), SearchMemo()
    with search_memo.remembering(memo):
        search_memo.search(searcher, clean)
    changed = clean.copy()
    changed[100:140] += 0.5  # a pasted defect
    changed[7, 3] = np.nextafter(changed[7, 3], np.float32(np.inf))  # one bit differs: not the same row
    searcher.rows = 0
    with search_memo.reusing(memo):
        dist, idx = search_memo.search(searcher, changed)
    assert searcher.rows == 41 and memo.hits == 459
    want_d, want_i = ExactSearch(bank).search(changed)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(dist, want_d, rtol=1e-6)


def test_reusing_keeps_nothing_new_and_another_searcher_gets_no_answers():
    bank, clean = _data(1)
    first, other, memo = CountingSearch(bank), CountingSearch(bank[::-1].copy()), SearchMemo()
    with search_memo.remembering(memo):
        search_memo.search(first, clean[:200])
    with search_memo.reusing(memo):
        search_memo.search(first, clean[200:])  # new rows: searched, not kept
        first.rows = 0
        search_memo.search(first, clean[200:])
        assert first.rows == 300
        _, idx = search_memo.search(other, clean[:200])  # the same rows, another bank
    assert other.rows == 200
    np.testing.assert_array_equal(idx, ExactSearch(bank[::-1].copy()).search(clean[:200])[1])


def test_outside_a_scope_nothing_is_kept_and_the_size_cap_holds():
    bank, clean = _data(2)
    searcher = CountingSearch(bank)
    per_row = 24 * 4 + 20  # the row, its fingerprint, distance and index
    memo = SearchMemo(max_bytes=250 * per_row)
    search_memo.search(searcher, clean)  # no scope: the daemon's path
    assert memo.bytes == 0
    with search_memo.remembering(memo):
        search_memo.search(searcher, clean[:250])
        search_memo.search(searcher, clean[250:])  # over the cap: not kept
    assert memo.bytes == 250 * per_row
    searcher.rows = 0
    with search_memo.reusing(memo):
        search_memo.search(searcher, clean)
    assert searcher.rows == 250


def test_an_empty_search_first_and_rows_past_the_cap_kept_up_to_it():
    bank, clean = _data(3)
    searcher = CountingSearch(bank)
    memo = SearchMemo(max_bytes=100 * (24 * 4 + 20))  # room for 100 rows with their answers
    with search_memo.remembering(memo):
        search_memo.search(searcher, clean[:0])
        search_memo.search(searcher, clean)  # the first 100 rows are kept
    searcher.rows = 0
    with search_memo.reusing(memo):
        dist, idx = search_memo.search(searcher, clean)
    assert searcher.rows == 400 and memo.hits == 100
    np.testing.assert_array_equal(idx, ExactSearch(bank).search(clean)[1])
