"""Session graphs: the hand-worked session [1, 2, 1, 3], padding, long sessions, batching."""

from __future__ import annotations

import numpy as np
import pytest

from niser.data import Samples
from niser.graph import GraphBatch, build_batch, length_groups, ragged_take


def _batch(sessions: list[list[int]], **kw: object) -> GraphBatch:
    s = Samples.from_pairs(sessions, [1] * len(sessions))
    return build_batch(s.items, s.offsets, **kw)  # type: ignore[arg-type]


def test_hand_worked_session_adjacency() -> None:
    g = _batch([[1, 2, 1, 3]])
    # nodes in ascending item order; edges 1->2, 2->1, 1->3
    np.testing.assert_array_equal(g.nodes, [[1, 2, 3]])
    adj_in = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=np.float32)
    adj_out = np.array([[0, 0.5, 0.5], [1, 0, 0], [0, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(g.adj[0, :, :3], adj_in)
    np.testing.assert_allclose(g.adj[0, :, 3:], adj_out)
    np.testing.assert_array_equal(g.alias, [[0, 1, 0, 2]])
    np.testing.assert_array_equal(g.positions, [[3, 2, 1, 0]])
    np.testing.assert_array_equal(g.mask, [[1, 1, 1, 1]])
    np.testing.assert_array_equal(g.last, [3])


def test_in_degree_normalisation_and_repeated_edges() -> None:
    # edges 1->3, 3->2, 2->3, 3->2 again (counted once): in-degrees 0, 1, 2 and
    # out-degrees 1, 1, 1 for nodes (1, 2, 3)
    g = _batch([[1, 3, 2, 3, 2]])
    np.testing.assert_array_equal(g.nodes, [[1, 2, 3]])
    adj_in = np.array([[0, 0, 0], [0, 0, 1], [0.5, 0.5, 0]], dtype=np.float32)
    adj_out = np.array([[0, 0, 1], [0, 0, 1], [0, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(g.adj[0, :, :3], adj_in)
    np.testing.assert_allclose(g.adj[0, :, 3:], adj_out)


def test_self_loop_from_a_repeated_click() -> None:
    g = _batch([[4, 4, 5]])
    np.testing.assert_array_equal(g.nodes, [[4, 5]])
    # edges 4->4 and 4->5: out-degree of 4 is 2; in-degree of 4 and of 5 is 1
    np.testing.assert_allclose(g.adj[0, :, 2:], np.array([[0.5, 0.5], [0.0, 0.0]]))
    np.testing.assert_allclose(g.adj[0, :, :2], [[1, 0], [1, 0]])


def test_batch_is_padded_to_its_own_longest_session() -> None:
    g = _batch([[5, 6], [7], [8, 8, 9]])
    assert g.alias.shape == (3, 3)  # longest session of this batch: 3 clicks
    assert g.nodes.shape == (3, 2)  # most distinct items: 2
    assert g.adj.shape == (3, 2, 4)
    np.testing.assert_array_equal(g.nodes, [[5, 6], [7, 0], [8, 9]])
    np.testing.assert_array_equal(g.mask, [[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    np.testing.assert_array_equal(g.last, [1, 0, 2])
    np.testing.assert_array_equal(g.positions, [[1, 0, 0], [0, 0, 0], [2, 1, 0]])
    np.testing.assert_array_equal(g.alias, [[0, 1, 0], [0, 0, 0], [0, 0, 1]])
    assert not g.adj[1].any()  # a one-click session has no edge


def test_truncate_keeps_the_most_recent_clicks() -> None:
    session = list(range(1, 15))  # 14 distinct clicks, table of 12 positions
    g = _batch([session, [3, 4]], max_positions=12, long_sessions="truncate")
    assert g.alias.shape == (2, 12)
    np.testing.assert_array_equal(g.nodes[0], np.arange(3, 15))
    np.testing.assert_array_equal(g.positions[0], np.arange(11, -1, -1))
    np.testing.assert_array_equal(g.last, [11, 1])
    # the kept part starts at item 3: no edge from 2 -> 3 survives
    assert g.adj[0, 0, :12].sum() == 0  # item 3 has no in-edge


def test_clamp_keeps_every_click_at_the_oldest_position() -> None:
    session = list(range(1, 15))
    g = _batch([session], max_positions=12, long_sessions="clamp")
    assert g.alias.shape == (1, 14)
    np.testing.assert_array_equal(g.nodes[0], np.arange(1, 15))
    np.testing.assert_array_equal(g.positions[0], [11, 11, 11, *range(10, -1, -1)])
    assert g.positions.max() == 11
    np.testing.assert_array_equal(g.last, [13])


def test_short_sessions_unaffected_by_long_session_rule() -> None:
    a = _batch([[1, 2, 1, 3]], long_sessions="truncate")
    b = _batch([[1, 2, 1, 3]], long_sessions="clamp")
    for x, y in zip(a.tensors(), b.tensors(), strict=True):
        assert x.equal(y)


@pytest.mark.parametrize("long_sessions", ["truncate", "clamp"])
def test_batch_equals_sessions_built_one_by_one(long_sessions: str) -> None:
    rng = np.random.default_rng(0)
    sessions = [rng.integers(1, 9, size=int(n)).tolist() for n in rng.integers(1, 17, size=40)]
    g = _batch(sessions, max_positions=12, long_sessions=long_sessions)
    for i, s in enumerate(sessions):
        one = _batch([s], max_positions=12, long_sessions=long_sessions)
        n, big_l = one.nodes.shape[1], one.alias.shape[1]
        np.testing.assert_array_equal(g.nodes[i, :n], one.nodes[0])
        assert not g.nodes[i, n:].any()
        np.testing.assert_array_equal(g.adj[i, :n, :n], one.adj[0, :, :n])
        np.testing.assert_array_equal(g.adj[i, :n, g.nodes.shape[1]:][:, :n], one.adj[0, :, n:])
        np.testing.assert_array_equal(g.alias[i, :big_l], one.alias[0])
        np.testing.assert_array_equal(g.positions[i, :big_l], one.positions[0])
        np.testing.assert_array_equal(g.mask[i, :big_l], one.mask[0])
        assert not g.mask[i, big_l:].any()
        assert g.last[i] == one.last[0]


def test_batch_of_a_slice_of_samples_uses_its_offsets() -> None:
    s = Samples.from_pairs([[9, 9], [1, 2, 1, 3], [4]], [1, 1, 1])
    part = s.subset(np.array([1]))
    g = build_batch(part.items, part.offsets)
    np.testing.assert_array_equal(g.nodes, [[1, 2, 3]])
    # build_batch on a view whose offsets do not start at 0
    g2 = build_batch(s.items, s.offsets[1:3])
    np.testing.assert_array_equal(g2.nodes, [[1, 2, 3]])
    np.testing.assert_array_equal(g2.alias, [[0, 1, 0, 2]])


def test_empty_session_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one click"):
        build_batch(np.array([1], dtype=np.int64), np.array([0, 1, 1], dtype=np.int64))


def test_ragged_take_lays_runs_end_to_end() -> None:
    gather, offsets = ragged_take(np.array([5, 0, 2]), np.array([2, 1, 3]))
    assert gather.tolist() == [5, 6, 0, 2, 3, 4]
    assert offsets.tolist() == [0, 2, 3, 6]


def test_length_groups_split_mixed_lengths_at_the_least_padding() -> None:
    lengths = np.array([12] * 20 + [2] * 60)
    np.random.default_rng(0).shuffle(lengths)
    short, long = length_groups(lengths)
    assert sorted(np.concatenate([short, long]).tolist()) == list(range(80))  # each row once
    assert set(lengths[short].tolist()) == {2} and set(lengths[long].tolist()) == {12}


def test_length_groups_keep_one_group_when_a_split_saves_little_or_rows_are_few() -> None:
    assert len(length_groups(np.full(80, 5))) == 1  # nothing to save
    assert len(length_groups(np.array([12] * 70 + [11] * 10))) == 1  # under a fifth saved
    assert len(length_groups(np.array([12] * 5 + [2] * 20), min_rows=16)) == 1  # too few rows
