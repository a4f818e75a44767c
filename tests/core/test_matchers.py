import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from detbench.core import matchers
from detbench.protos import matcher_pb2


def np_argmax_match(sim, valid, matched_t, unmatched_t, neg_lower, force):
    """Plain loops over anchors; the TF OD API's ArgMaxMatcher semantics."""
    n_gt, n = sim.shape
    rows = [r for r in range(n_gt) if valid[r]]
    out = np.full(n, -1)
    if not rows:
        return out
    for c in range(n):
        best = max(rows, key=lambda r: (sim[r, c], -r))
        v = sim[best, c]
        if v >= matched_t:
            out[c] = best
        elif v >= unmatched_t:
            out[c] = -2 if neg_lower else -1
        else:
            out[c] = -1 if neg_lower else -2
    if force:
        for r in reversed(rows):  # the first row wins a shared column
            out[int(np.argmax(sim[r]))] = r
    return out


def np_greedy_bipartite(sim, valid):
    sim = np.where(np.asarray(valid)[:, None], sim, -np.inf).astype(np.float64)
    out = np.full(sim.shape[1], -1)
    for _ in range(min(int(np.sum(valid)), sim.shape[1])):
        r, c = np.unravel_index(np.argmax(sim), sim.shape)
        out[c] = r
        sim[r, :] = -np.inf
        sim[:, c] = -np.inf
    return out


def test_argmax_hand_example():
    sim = np.array(
        [[0.9, 0.45, 0.2, 0.1, 0.3], [0.6, 0.3, 0.55, 0.35, 0.1], [1.0, 1.0, 1.0, 1.0, 1.0]],
        np.float32,
    )  # row 2: padding
    valid = [True, True, False]
    m = matchers.ArgMaxMatcher(0.5, 0.4).match(sim, valid)
    # col 0: 0.9 -> row 0; col 1: 0.45 in [0.4, 0.5) -> ignored; col 2: 0.55
    # -> row 1; col 3: 0.35 -> negative; col 4: 0.3 -> negative.
    np.testing.assert_array_equal(m.match_results, [0, -2, 1, -1, -1])
    np.testing.assert_array_equal(m.matched_mask(), [1, 0, 1, 0, 0])
    np.testing.assert_array_equal(m.unmatched_mask(), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(m.ignored_mask(), [0, 1, 0, 0, 0])
    assert int(m.num_matched()) == 2
    # Swapped roles: below 0.4 ignored, band negative.
    m = matchers.ArgMaxMatcher(0.5, 0.4, negatives_lower_than_unmatched=False).match(sim, valid)
    np.testing.assert_array_equal(m.match_results, [0, -1, 1, -2, -2])
    # Force match with threshold 0.95: row 0's best column is 0 (0.9), row 1's
    # also column 0 (0.6): the first row wins; row 1 stays unmatched.
    m = matchers.ArgMaxMatcher(0.95, 0.4, force_match_for_each_row=True).match(sim, valid)
    np.testing.assert_array_equal(m.match_results, [0, -2, -2, -1, -1])


@pytest.mark.parametrize(
    "matched_t,unmatched_t,neg_lower,force",
    [
        (0.5, 0.5, True, False),
        (0.7, 0.3, True, True),
        (0.6, 0.4, False, False),
        (0.6, 0.4, False, True),
    ],
)
def test_argmax_matches_numpy(matched_t, unmatched_t, neg_lower, force):
    rng = np.random.default_rng(0)
    matcher = matchers.ArgMaxMatcher(matched_t, unmatched_t, neg_lower, force)
    for trial in range(6):
        n_gt, n = rng.integers(1, 6), rng.integers(1, 30)
        sim = rng.uniform(0, 1, (n_gt, n)).astype(np.float32)
        valid = rng.uniform(size=n_gt) < 0.7
        if trial == 0:
            valid[:] = False
        got = matcher.match(sim, valid).match_results.numpy()
        np.testing.assert_array_equal(
            got, np_argmax_match(sim, valid, matched_t, unmatched_t, neg_lower, force)
        )


def test_bipartite_hand_example_and_numpy():
    sim = np.array([[0.9, 0.8, 0.1], [0.95, 0.2, 0.3], [2.0, 2.0, 2.0]], np.float32)
    # Best pair (1, 0) = 0.95; then row 0's best remaining is column 1 (0.8).
    # Row 2 is padding.  Column 2 stays unmatched.
    m = matchers.BipartiteMatcher().match(sim, [True, True, False])
    np.testing.assert_array_equal(m.match_results, [1, 0, -1])
    rng = np.random.default_rng(1)
    for _ in range(8):
        n_gt, n = rng.integers(1, 8), rng.integers(1, 8)
        sim = rng.uniform(size=(n_gt, n)).astype(np.float32)
        valid = rng.uniform(size=n_gt) < 0.7
        got = matchers.BipartiteMatcher().match(sim, valid).match_results
        np.testing.assert_array_equal(got, np_greedy_bipartite(sim, valid))


@pytest.mark.parametrize(
    "matcher",
    [
        matchers.ArgMaxMatcher(0.5, 0.3, force_match_for_each_row=True),
        matchers.ArgMaxMatcher(0.1, negatives_lower_than_unmatched=False),
        matchers.BipartiteMatcher(),
    ],
)
def test_padding_never_matches(matcher):
    rng = np.random.default_rng(2)
    sim = rng.uniform(0, 0.6, (6, 40)).astype(np.float32)
    sim[3:] = 1.0  # padded rows look perfect
    valid = [True, True, True, False, False, False]
    got = matcher.match(sim, valid).match_results.numpy()
    assert got.max() < 3 and np.any(got >= 0)
    # No valid row at all, or no row: every anchor negative.
    got = matcher.match(sim, [False] * 6).match_results.numpy()
    np.testing.assert_array_equal(got, -np.ones(40))
    got = matcher.match(np.zeros((0, 40), np.float32), np.zeros(0, bool))
    np.testing.assert_array_equal(got.match_results, -np.ones(40))


def test_gather_based_on_match():
    m = matchers.Match([2, -1, 0, -2])
    rows = tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    np.testing.assert_allclose(
        m.gather_based_on_match(rows, [-1.0, -1.0], [9.0, 9.0]), [[5, 6], [-1, -1], [1, 2], [9, 9]]
    )
    np.testing.assert_array_equal(
        m.gather_based_on_match(tf.constant([7, 8, 9]), 0, -5), [9, 0, 7, -5]
    )
    # Batched: match [2, 3] over rows [2, 2].
    mb = matchers.Match([[1, -1, 0], [-2, 0, 0]])
    np.testing.assert_array_equal(
        mb.gather_based_on_match(tf.constant([[10, 11], [20, 21]]), 0, -1),
        [[11, 0, 10], [-1, 20, 20]],
    )


def test_build_matcher():
    def build(text):
        return matchers.build_matcher(text_format.Parse(text, matcher_pb2.Matcher()))

    m = build(
        "argmax { matched_threshold: 0.7 unmatched_threshold: 0.3 force_match_for_each_row: true }"
    )
    assert isinstance(m, matchers.ArgMaxMatcher)
    assert (m.matched_threshold, m.unmatched_threshold) == pytest.approx((0.7, 0.3))
    assert m.force_match_for_each_row and m.negatives_lower_than_unmatched
    assert isinstance(build("bipartite {}"), matchers.BipartiteMatcher)
    m = build("")
    assert isinstance(m, matchers.ArgMaxMatcher) and m.matched_threshold == 0.5
    with pytest.raises(ValueError, match="unmatched_threshold"):
        build("argmax { matched_threshold: 0.3 unmatched_threshold: 0.5 }")


def test_inside_tf_function():
    argmax = matchers.ArgMaxMatcher(0.6, 0.4, force_match_for_each_row=True)
    bip = matchers.BipartiteMatcher()

    @tf.function(input_signature=[tf.TensorSpec([None, None]), tf.TensorSpec([None], tf.bool)])
    def fn(sim, valid):
        return (argmax.match(sim, valid).match_results, bip.match(sim, valid).match_results)

    rng = np.random.default_rng(3)
    sim = rng.uniform(size=(5, 12)).astype(np.float32)
    valid = np.array([True, False, True, True, False])
    a, b = fn(sim, valid)
    np.testing.assert_array_equal(a, np_argmax_match(sim, valid, 0.6, 0.4, True, True))
    np.testing.assert_array_equal(b, np_greedy_bipartite(sim, valid))
    a, b = fn(np.zeros((0, 12), np.float32), np.zeros(0, bool))
    np.testing.assert_array_equal(a, -np.ones(12))
    np.testing.assert_array_equal(b, -np.ones(12))
