"""The sampling specification: pure functions, pinned values."""

import numpy as np
import pytest

from webapp.sampling import SplitMix64, draw, next_ids, sampling_probs, softmax, top_k_filter, top_p_filter


def test_splitmix64_matches_the_reference_sequence():
    # The published test vector for seed 1234567 (as used to seed xoshiro generators).
    rng = SplitMix64(1234567)
    assert [rng.next_u64() for _ in range(3)] == [6457827717110365317, 3203168211198807973, 9817491932198370423]
    assert SplitMix64(0).next_u64() == 0xE220A8397B1DCDAF
    assert SplitMix64(7).uniform() == 0.3898297483912715  # the top 53 bits of its first draw


def test_temperature_zero_is_greedy_argmax_and_draws_nothing():
    logits = np.random.default_rng(0).normal(size=(4, 65)).astype(np.float32)
    rngs = [SplitMix64(1) for _ in range(4)]
    assert np.array_equal(next_ids(logits, 0, 5, 0.5, rngs), logits.argmax(axis=-1))
    assert all(r.state == SplitMix64(1).state for r in rngs)


def test_top_k_keeps_exactly_the_k_largest():
    logits = np.random.default_rng(1).permutation(20).astype(np.float64)[None]
    kept = np.isfinite(top_k_filter(logits, 5))[0]
    assert set(np.flatnonzero(kept)) == set(np.argsort(-logits[0])[:5])
    assert np.array_equal(top_k_filter(logits, 0), logits)
    assert np.array_equal(top_k_filter(logits, 20), logits)


@pytest.mark.parametrize("p, kept", [(1e-9, {1}), (0.5, {1}), (0.75, {1, 3}), (0.76, {1, 3, 0}), (0.9, {1, 3, 0, 2}),
                                     (0.95, {1, 3, 0, 2, 4})])
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    # Sorted by probability: id 1 (0.5), 3 (0.25), 0 (0.125), then 2 and 4 (0.0625 each; the lower id first).
    probs = np.array([[0.125, 0.5, 0.0625, 0.25, 0.0625]])
    assert set(np.flatnonzero(np.isfinite(top_p_filter(np.log(probs), p))[0])) == kept


def test_temperature_scales_logits_before_the_softmax():
    logits = np.array([[2.0, 1.0, 0.0]])
    assert np.allclose(sampling_probs(logits, 0.5, 0, 1.0), softmax(logits / 0.5))
    assert np.allclose(sampling_probs(logits, 1.0, 0, 1.0), softmax(logits))
    assert sampling_probs(logits, 0.05, 0, 1.0)[0, 0] > 0.999
    assert np.allclose(sampling_probs(logits, 100, 0, 1.0), 1 / 3, atol=0.01)


def test_draw_is_the_inverse_cdf_and_never_picks_a_masked_id():
    probs = np.array([0.2, 0.0, 0.5, 0.3])
    assert [draw(probs, u) for u in (0.0, 0.19, 0.2, 0.69, 0.7, 0.999999)] == [0, 0, 2, 2, 3, 3]


def test_draws_follow_the_distribution():
    logits = np.log(np.array([[0.6, 0.3, 0.1]]))
    rng = [SplitMix64(3)]
    counts = np.bincount([next_ids(logits, 1.0, 0, 1.0, rng)[0] for _ in range(6000)], minlength=3)
    assert np.allclose(counts / 6000, [0.6, 0.3, 0.1], atol=0.03)
