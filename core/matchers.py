"""Matchers: assign each anchor (column) a groundtruth row, or none.

A matcher takes ``similarity`` [N_gt, N_anchors] (higher = more similar) and
``valid_rows`` bool [N_gt] (False for padded groundtruth, which never
matches) and returns a ``Match``.
"""

import tensorflow as tf

UNMATCHED = -1  # negative anchor
IGNORED = -2  # neither positive nor negative


class Match:
    """match_results int32 [..., N]: >= 0 matched row, -1 unmatched, -2 ignored."""

    def __init__(self, match_results):
        self.match_results = tf.cast(match_results, tf.int32)

    def matched_mask(self):
        return self.match_results >= 0

    def unmatched_mask(self):
        return tf.equal(self.match_results, UNMATCHED)

    def ignored_mask(self):
        return tf.equal(self.match_results, IGNORED)

    def num_matched(self):
        return tf.reduce_sum(tf.cast(self.matched_mask(), tf.int32), axis=-1)

    def gather_based_on_match(self, input_tensor, unmatched_value, ignored_value):
        """Rows of input_tensor [..., M, d...] per match -> [..., N, d...].

        Unmatched / ignored columns get unmatched_value / ignored_value (scalars
        or shaped like one row).  Leading dims of match and input must agree.
        """
        input_tensor = tf.convert_to_tensor(input_tensor)
        axis = self.match_results.shape.rank - 1
        row_shape = tf.concat(
            [tf.shape(input_tensor)[:axis], [1], tf.shape(input_tensor)[axis + 1 :]], 0
        )
        fill = [
            tf.broadcast_to(tf.cast(v, input_tensor.dtype), row_shape)
            for v in (ignored_value, unmatched_value)
        ]
        table = tf.concat(fill + [input_tensor], axis=axis)
        return tf.gather(table, self.match_results + 2, axis=axis, batch_dims=axis)


def _mask_rows(similarity, valid_rows):
    """Sets invalid rows to the lowest float and appends one such row.

    The extra row keeps argmax over rows defined when there are no rows.
    """
    similarity = tf.convert_to_tensor(similarity, tf.float32)
    n = tf.shape(similarity)[0]
    if valid_rows is None:
        valid_rows = tf.ones([n], tf.bool)
    valid_rows = tf.concat([tf.cast(valid_rows, tf.bool), [False]], 0)
    similarity = tf.concat([similarity, tf.zeros([1, tf.shape(similarity)[1]])], 0)
    lowest = tf.float32.min
    return tf.where(valid_rows[:, None], similarity, lowest), valid_rows


class ArgMaxMatcher:
    """Each anchor takes its most similar groundtruth, banded by thresholds.

    best >= matched_threshold: matched; best < unmatched_threshold: negative
    (or ignored when negatives_lower_than_unmatched is False); in between:
    ignored (or negative when it is False).  force_match_for_each_row also
    matches every valid row to its best column (the first row wins a column
    two rows share).  With no valid row, every anchor is negative.
    """

    def __init__(
        self,
        matched_threshold=0.5,
        unmatched_threshold=None,
        negatives_lower_than_unmatched=True,
        force_match_for_each_row=False,
    ):
        if unmatched_threshold is None:
            unmatched_threshold = matched_threshold
        if unmatched_threshold > matched_threshold:
            raise ValueError(
                f"unmatched_threshold {unmatched_threshold} > matched_threshold {matched_threshold}"
            )
        self.matched_threshold = float(matched_threshold)
        self.unmatched_threshold = float(unmatched_threshold)
        self.negatives_lower_than_unmatched = negatives_lower_than_unmatched
        self.force_match_for_each_row = force_match_for_each_row

    def match(self, similarity, valid_rows=None):
        sim, valid = _mask_rows(similarity, valid_rows)
        matches = tf.argmax(sim, axis=0, output_type=tf.int32)
        best = tf.reduce_max(sim, axis=0)
        below = best < self.unmatched_threshold
        between = (best >= self.unmatched_threshold) & (best < self.matched_threshold)
        low_value, band_value = (
            (UNMATCHED, IGNORED) if self.negatives_lower_than_unmatched else (IGNORED, UNMATCHED)
        )
        matches = tf.where(below, low_value, matches)
        matches = tf.where(between, band_value, matches)
        if self.force_match_for_each_row:
            best_col = tf.argmax(sim, axis=1, output_type=tf.int32)  # [N+1]
            onehot = tf.one_hot(best_col, tf.shape(sim)[1], dtype=tf.int32)
            onehot *= tf.cast(valid, tf.int32)[:, None]
            forced_row = tf.argmax(onehot, axis=0, output_type=tf.int32)
            matches = tf.where(tf.reduce_max(onehot, axis=0) > 0, forced_row, matches)
        matches = tf.where(tf.reduce_any(valid), matches, UNMATCHED)
        return Match(matches)


class BipartiteMatcher:
    """Greedy bipartite matching: repeatedly take the best remaining pair.

    Each valid row matches at most one column and vice versa; ties go to the
    lowest (row, column) in row-major order.  Columns left over are negative.
    """

    def match(self, similarity, valid_rows=None):
        sim, valid = _mask_rows(similarity, valid_rows)
        num_cols = tf.shape(sim)[1]
        steps = tf.minimum(tf.reduce_sum(tf.cast(valid, tf.int32)), num_cols)
        lowest = tf.float32.min

        def body(i, sim, matches):
            flat = tf.argmax(tf.reshape(sim, [-1]), output_type=tf.int32)
            row, col = flat // num_cols, flat % num_cols
            matches = tf.tensor_scatter_nd_update(matches, [[col]], [row])
            row_hit = tf.equal(tf.range(tf.shape(sim)[0]), row)[:, None]
            col_hit = tf.equal(tf.range(num_cols), col)[None, :]
            sim = tf.where(row_hit | col_hit, lowest, sim)
            return i + 1, sim, matches

        _, _, matches = tf.while_loop(
            lambda i, *_: i < steps, body, (tf.constant(0), sim, tf.fill([num_cols], UNMATCHED))
        )
        return Match(matches)


def build_matcher(proto):
    """Matcher proto -> matcher; an ArgMaxMatcher with defaults when unset."""
    which = proto.WhichOneof("matcher")
    if which == "bipartite":
        return BipartiteMatcher()
    c = proto.argmax
    return ArgMaxMatcher(
        matched_threshold=c.matched_threshold,
        unmatched_threshold=c.unmatched_threshold,
        negatives_lower_than_unmatched=c.negatives_lower_than_unmatched,
        force_match_for_each_row=c.force_match_for_each_row,
    )
