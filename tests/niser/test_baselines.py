"""POP, S-POP and Item-KNN on tiny hand-checkable cases, and on the shared Diginetica split."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from niser.baselines import ItemKNN, Pop, SPop, sessions_from_samples
from niser.data import Samples, augment_prefixes, load_preprocessed
from niser.metrics import evaluate

# clicks: item 1 x4, item 2 x3, item 3 x2, item 4 x2, item 5 x1, item 6 x0
TRAIN = [[1, 2, 3], [2, 2, 4, 1], [5, 1], [3, 4, 1]]
N = 6


def _batch(prefixes: list[list[int]]) -> Samples:
    return Samples.from_pairs(prefixes, [1] * len(prefixes))


def test_sessions_rebuilt_from_augmented_samples() -> None:
    items, offsets = sessions_from_samples(augment_prefixes(TRAIN))
    rebuilt = [items[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    assert rebuilt == TRAIN


def test_sessions_rebuilt_keep_a_session_that_repeats_the_previous_one() -> None:
    # [1, 2] then [1, 2, 3]: the second starts with a length-1 prefix, so it is a new session
    sessions = [[1, 2], [1, 2, 3], [4, 4]]
    items, offsets = sessions_from_samples(augment_prefixes(sessions))
    assert np.diff(offsets).tolist() == [2, 3, 2]
    assert items.tolist() == [1, 2, 1, 2, 3, 4, 4]


def test_unaugmented_samples_are_one_session_each() -> None:
    s = Samples.from_pairs([[1, 2], [1, 3]], [5, 6])  # [1, 3] does not extend [1, 2] -> 5
    items, offsets = sessions_from_samples(s)
    assert items.tolist() == [1, 2, 5, 1, 3, 6]
    assert offsets.tolist() == [0, 3, 6]


def test_fit_on_samples_equals_fit_on_sessions() -> None:
    a = ItemKNN().fit(augment_prefixes(TRAIN), N)
    b = ItemKNN().fit(TRAIN, N)
    np.testing.assert_array_equal(a.popularity, b.popularity)
    assert (a.sim != b.sim).nnz == 0


def test_pop_ranks_by_training_clicks_ties_by_index() -> None:
    pop = Pop().fit(TRAIN, N)
    np.testing.assert_array_equal(pop.popularity, [0, 4, 3, 2, 2, 1, 0])
    top = pop.topk(_batch([[6], [5, 5, 3]]), 5)
    np.testing.assert_array_equal(top, [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]])


def test_spop_in_session_counts_then_popularity_then_fill() -> None:
    spop = SPop().fit(TRAIN, N)
    top = spop.topk(_batch([[5, 3, 5, 4], [6], [1, 2, 3, 4, 5, 6]]), 4)
    # row 0: 5 twice; 3 and 4 once each, tied on global clicks (2) -> index order; then
    # the most popular item not in the session
    np.testing.assert_array_equal(top[0], [5, 3, 4, 1])
    # row 1: item 6 was never clicked in training but is in the session: first
    np.testing.assert_array_equal(top[1], [6, 1, 2, 3])
    # row 2: all counts equal -> pure popularity; only the first k are kept
    np.testing.assert_array_equal(top[2], [1, 2, 3, 4])


def test_spop_never_repeats_an_item() -> None:
    spop = SPop().fit(TRAIN, N)
    top = spop.topk(_batch([[2, 1], [4]]), 6)
    for row in top:
        assert sorted(row.tolist()) == list(range(1, 7))
    np.testing.assert_array_equal(top[0], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(top[1], [4, 1, 2, 3, 5, 6])


def test_itemknn_similarity_is_the_regularised_cosine() -> None:
    knn = ItemKNN(lam=20.0, alpha=0.5).fit(TRAIN, N)
    supp = {1: 4, 2: 3, 3: 2, 4: 2, 5: 1}
    # cooc(1, 2): session 1 gives 1*1, session 2 gives 1*2 (item 2 clicked twice) -> 3
    assert knn.sim[1, 2] == pytest.approx(3 / math.sqrt((supp[1] + 20) * (supp[2] + 20)))
    # cooc(2, 4) = 2 (session 2), cooc(1, 4) = 1 + 1, cooc(3, 5) = 0
    assert knn.sim[2, 4] == pytest.approx(2 / math.sqrt(23 * 22))
    assert knn.sim[1, 4] == pytest.approx(2 / math.sqrt(24 * 22))
    assert knn.sim[3, 5] == 0.0
    assert knn.sim[1, 1] == 0.0  # an item is not its own neighbour
    np.testing.assert_allclose(knn.sim.toarray(), knn.sim.toarray().T)


def test_itemknn_alpha_one_divides_by_the_anchor_support_only() -> None:
    knn = ItemKNN(lam=0.0, alpha=1.0).fit(TRAIN, N)
    assert knn.sim[2, 1] == pytest.approx(3 / 3)  # cooc 3 / supp_2 3
    assert knn.sim[1, 2] == pytest.approx(3 / 4)


def test_itemknn_scores_by_the_last_item_only() -> None:
    knn = ItemKNN().fit(TRAIN, N)
    top = knn.topk(_batch([[5, 3], [3, 5], [6]]), 4)
    # last item 3: neighbours 1 (cooc 2), 4 (cooc 1, supp 2), 2 (cooc 1, supp 3); then fill
    s1, s4, s2 = (2 / math.sqrt(22 * 24), 1 / math.sqrt(22 * 22), 1 / math.sqrt(22 * 23))
    assert s1 > s4 > s2
    # then the most popular item of similarity 0: item 3 itself (2 clicks) before 5 (1 click)
    np.testing.assert_array_equal(top[0], [1, 4, 2, 3])
    # last item 5: only neighbour 1; the rest by popularity, and 5 (similarity 0) is allowed
    np.testing.assert_array_equal(top[1], [1, 2, 3, 4])
    # an item with no co-occurrence at all: pure popularity
    np.testing.assert_array_equal(top[2], [1, 2, 3, 4])


def test_itemknn_does_not_exclude_earlier_session_items() -> None:
    knn = ItemKNN().fit(TRAIN, N)
    top = knn.topk(_batch([[1, 3]]), 2)
    np.testing.assert_array_equal(top[0], [1, 4])


def test_baselines_are_topk_functions_for_evaluate() -> None:
    test = Samples.from_pairs([[5, 3], [2], [6, 6]], [1, 4, 3])
    knn = ItemKNN().fit(TRAIN, N)
    # [5, 3] -> 1 at rank 1; [2] -> neighbours of 2: 1 (3/sqrt(24*23)), 4 (2/sqrt(23*22)), ...
    res = evaluate(knn.topk, test, ks=(1, 2), batch_size=2)
    top = knn.topk(test, 2)
    hits = [t in row for t, row in zip(test.targets, top, strict=True)]
    assert res["recall_2"] == pytest.approx(100.0 * sum(hits) / 3)
    assert res["recall_1"] == pytest.approx(100.0 / 3)


@pytest.mark.parametrize("cls", [Pop, SPop, ItemKNN])
def test_unfitted_or_bad_k_is_refused(cls: type[Pop]) -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        cls().topk(_batch([[1]]), 1)
    b = cls().fit(TRAIN, N)
    with pytest.raises(ValueError, match="k=7"):
        b.topk(_batch([[1]]), 7)


def test_items_outside_the_vocabulary_are_refused() -> None:
    with pytest.raises(ValueError, match=r"1\.\.3"):
        Pop().fit([[1, 2, 4]], 3)


@pytest.mark.shared_data
def test_published_baselines_on_diginetica(shared_data: Path) -> None:
    """S-POP 21.08 / 13.69 and Item-KNN 35.08 / 11.02 (Recall@20 / MRR@20), within 1.5."""
    data = load_preprocessed(shared_data / "diginetica")
    spop = evaluate(SPop().fit(data.train, data.n_items).topk, data.test)
    knn = evaluate(ItemKNN().fit(data.train, data.n_items).topk, data.test)
    assert abs(spop["recall_20"] - 21.08) <= 1.5 and abs(spop["mrr_20"] - 13.69) <= 1.5
    assert abs(knn["recall_20"] - 35.08) <= 1.5 and abs(knn["mrr_20"] - 11.02) <= 1.5
