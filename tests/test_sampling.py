"""The sampling specification: pure functions, pinned values."""

import numpy as np
import pytest

from webapp.inference.sampling import (
    SamplingParams,
    SettingsError,
    SplitMix64,
    draw_blocks,
    draw_rows,
    min_p_filter,
    next_ids,
    sampling_distribution,
    sampling_probs,
    softmax,
    top_alternatives,
    top_k_filter,
    top_p_filter,
)


def rows_of(n: int, **settings) -> list[SamplingParams]:
    return [SamplingParams(**settings)] * n


def test_splitmix64_matches_the_reference_sequence():
    # The published test vector for seed 1234567 (as used to seed xoshiro generators).
    rng = SplitMix64(1234567)
    assert [rng.next_u64() for _ in range(3)] == [6457827717110365317, 3203168211198807973, 9817491932198370423]
    assert SplitMix64(0).next_u64() == 0xE220A8397B1DCDAF
    assert SplitMix64(7).uniform() == 0.3898297483912715  # the top 53 bits of its first draw


def test_temperature_zero_is_greedy_argmax_and_draws_nothing():
    logits = np.random.default_rng(0).normal(size=(4, 65)).astype(np.float32)
    rngs = [SplitMix64(1) for _ in range(4)]
    assert np.array_equal(next_ids(logits, rows_of(4, temperature=0, top_k=5, top_p=0.5), rngs), logits.argmax(axis=-1))
    assert all(r.state == SplitMix64(1).state for r in rngs)


def test_top_k_keeps_exactly_the_k_largest():
    logits = np.random.default_rng(1).permutation(20).astype(np.float64)[None]
    kept = np.isfinite(top_k_filter(logits, [5]))[0]
    assert set(np.flatnonzero(kept)) == set(np.argsort(-logits[0])[:5])
    assert np.array_equal(top_k_filter(logits, [0]), logits)
    assert np.array_equal(top_k_filter(logits, [20]), logits)


@pytest.mark.parametrize(
    "p, kept",
    [(1e-9, {1}), (0.5, {1}), (0.75, {1, 3}), (0.76, {1, 3, 0}), (0.9, {1, 3, 0, 2}), (0.95, {1, 3, 0, 2, 4})],
)
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    # Sorted by probability: id 1 (0.5), 3 (0.25), 0 (0.125), then 2 and 4 (0.0625 each; the lower id first).
    probs = np.array([[0.125, 0.5, 0.0625, 0.25, 0.0625]])
    assert set(np.flatnonzero(np.isfinite(top_p_filter(np.log(probs), [p]))[0])) == kept


@pytest.mark.parametrize(
    "min_p, kept",
    [(0.0, {0, 1, 2, 3, 4}), (1e-9, {0, 1, 2, 3, 4}), (0.25, {0, 1, 3}), (0.5, {1, 3}), (0.51, {1}), (1.0, {1})],
)
def test_min_p_keeps_what_is_at_least_min_p_times_the_likeliest(min_p, kept):
    probs = np.array([[0.125, 0.5, 0.0625, 0.25, 0.0625]])  # relative to the likeliest: 0.25, 1, 0.125, 0.5, 0.125
    assert set(np.flatnonzero(np.isfinite(min_p_filter(np.log(probs), [min_p]))[0])) == kept


def test_min_p_applies_after_temperature_as_transformers_min_p_warper_does():
    """transformers' MinPLogitsWarper on the temperature-scaled logits: softmax, then keep the
    probabilities at or above min_p × the largest."""
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(50, 65)) * 3
    for temperature, min_p in [(0.5, 0.1), (1.0, 0.05), (2.0, 0.3)]:
        scaled = logits / temperature
        probs = softmax(scaled)
        want = softmax(np.where(probs < min_p * probs.max(axis=-1, keepdims=True), -np.inf, scaled))
        assert np.allclose(sampling_probs(logits, rows_of(50, temperature=temperature, min_p=min_p)), want)


def test_each_row_samples_with_its_own_settings():
    """A batch of rows with different settings gives each row what it gives alone."""
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(6, 65)) * 2
    params = [
        SamplingParams(temperature=t, top_k=k, top_p=p, min_p=m)
        for t, k, p, m in [
            (0.8, 0, 1.0, 0.0),
            (1.3, 5, 1.0, 0.0),
            (0.5, 0, 0.7, 0.0),
            (1.0, 10, 0.9, 0.05),
            (2.0, 0, 1.0, 0.2),
            (0.9, 64, 0.99, 0.01),
        ]
    ]
    together = sampling_probs(logits, params)
    for r, p in enumerate(params):
        assert np.array_equal(together[r], sampling_probs(logits[r : r + 1], [p])[0])
    greedy = params[:2] + [SamplingParams(temperature=0)] + params[3:]
    streams = [SplitMix64(r) for r in range(6)]
    ids = next_ids(logits, greedy, streams)
    assert ids[2] == logits[2].argmax() and streams[2].state == SplitMix64(2).state  # the greedy row drew nothing
    assert [s.state for r, s in enumerate(streams) if r != 2] != [SplitMix64(r).state for r in range(6) if r != 2]


def test_temperature_scales_logits_before_the_softmax():
    logits = np.array([[2.0, 1.0, 0.0]])
    assert np.allclose(sampling_probs(logits, rows_of(1, temperature=0.5)), softmax(logits / 0.5))
    assert np.allclose(sampling_probs(logits, rows_of(1, temperature=1.0)), softmax(logits))
    assert sampling_probs(logits, rows_of(1, temperature=0.05))[0, 0] > 0.999
    assert np.allclose(sampling_probs(logits, rows_of(1, temperature=10)), 1 / 3, atol=0.04)


def test_draw_is_the_inverse_cdf_and_never_picks_a_masked_id():
    probs = np.array([0.2, 0.0, 0.5, 0.3])
    u = np.array([0.0, 0.19, 0.2, 0.69, 0.7, 0.999999])
    assert draw_rows(np.tile(probs, (6, 1)), u).tolist() == [0, 0, 2, 2, 3, 3]


def test_draw_rows_draws_each_row_as_a_search_of_its_own_cumulative_sums():
    """The vectorized draw is the plain inverse CDF of each row: a binary search (searchsorted)
    of the row's own cumulative sums, at the uniform's edges too, with masked ids."""
    rng = np.random.default_rng(3)
    for trial in range(200):
        logits = rng.normal(size=(64, 65)).astype(np.float32) * rng.uniform(0.1, 8)
        logits[:, rng.integers(0, 65, 10 * (trial % 2))] = -np.inf
        probs = sampling_probs(
            logits,
            rows_of(
                64,
                temperature=rng.uniform(0.05, 3),
                top_k=int(rng.integers(0, 70)),
                top_p=float(rng.uniform(0.05, 1)),
                min_p=float(rng.uniform(0, 0.2)),
            ),
        )
        u = rng.random(64)
        u[:3] = [0.0, 1 - 2**-53, 0.5]
        want = [
            min(int(np.searchsorted(np.cumsum(row), x * np.cumsum(row)[-1], side="right")), 64)
            for row, x in zip(probs, u)
        ]
        assert draw_rows(probs, u).tolist() == want


def test_draws_follow_the_distribution():
    logits = np.log(np.array([[0.6, 0.3, 0.1]]))
    rng = [SplitMix64(3)]
    counts = np.bincount([next_ids(logits, rows_of(1, temperature=1.0), rng)[0] for _ in range(6000)], minlength=3)
    assert np.allclose(counts / 6000, [0.6, 0.3, 0.1], atol=0.03)


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_requests_drawn_in_one_block_each_keep_what_they_would_keep_alone(temperature):
    """draw_blocks over the rows of three requests (a crowd's drafted step) gives each request the
    characters, probabilities and stream advances of the plain loop on its rows alone: a request
    stops at the first draw of its rows that differs from their draft, at its limit, or where its
    draft ends (-1), whatever the others do."""
    rng = np.random.default_rng(5)
    block = rng.normal(size=(5, 4, 7)) * 3
    owner = np.array([0, 0, 1, 2, 2])  # request 0 and 2 have two rows each
    limits = np.array([9, 9, 2, 9, 9])
    drafted = block[:, :-1].argmax(axis=-1)  # greedy draws keep these...
    drafted[0, 1] = (drafted[0, 1] + 1) % 7  # ...but request 0's first row differs at its second draft
    drafted[3:, 2] = -1  # request 2 drafted two characters only
    streams = [SplitMix64(100 + r) for r in range(5)]
    params = rows_of(5, temperature=temperature)
    ids, probs, counts = draw_blocks(block, drafted, params, streams, owner, limits)
    for request in range(3):  # the plain loop on the request's rows alone
        rows = [int(r) for r in np.flatnonzero(owner == request)]
        alone = [SplitMix64(100 + r) for r in rows]
        for j in range(4):
            want = next_ids(block[rows, j], params[: len(rows)], alone)
            assert list(ids[rows, j]) == list(want)
            assert np.allclose(probs[rows, j], softmax(block[rows, j])[np.arange(len(rows)), want])
            if j == 3 or j + 1 == limits[rows[0]] or (want != drafted[rows, j]).any():
                break
        assert list(counts[rows]) == [j + 1] * len(rows)
        assert [s.state for s in alone] == [streams[r].state for r in rows]  # one draw per written character
    if temperature == 0:
        assert list(counts) == [2, 2, 2, 3, 3]  # request 0 stops at its mismatch, 1 at its limit, 2 at its draft's end


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_new_tokens", 10**9, "max_new_tokens must be a whole number from 1 to 2000"),
        ("max_new_tokens", 0, "max_new_tokens"),
        ("temperature", -1, "temperature must be between 0"),
        ("temperature", float("nan"), "temperature"),
        ("top_p", 0, "top_p must be above 0"),
        ("top_p", 2, "top_p"),
        ("top_k", -5, "top_k must be a whole number"),
        ("min_p", -0.1, r"min_p must be between 0 \(off\) and 1, not -0.1"),
        ("min_p", 1.5, "min_p"),
        ("min_p", "0.1", "min_p"),
        ("seed", 1.5, "seed must be a whole number"),
        ("seed", "abc", "seed"),
        (
            "seed",
            10**30,
            "seed must be a whole number from 0 to 2\\^63-1, not 1000000000000000000000000000000",
        ),  # found by fuzzing
        ("max_new_tokens", -(2**70), "max_new_tokens"),
        ("temperature", float("inf"), "temperature"),
        ("num_samples", 100, "num_samples"),
        ("alternatives", 21, "alternatives must be a whole number from 0 to 20, not 21"),
        ("alternatives", -1, "alternatives"),
        ("alternatives", 2.5, "alternatives"),
    ],
)
def test_out_of_range_settings_are_refused_with_a_sentence(field, value, message):
    with pytest.raises(SettingsError, match=message):
        SamplingParams(**{field: value})


def test_whole_numbers_given_as_floats_become_ints():
    params = SamplingParams(
        max_new_tokens=10.0, top_k=np.float64(3), seed=1e3
    )  # seed 1e3 made SplitMix64 fail (fuzzing)
    assert (params.max_new_tokens, params.top_k, params.seed) == (10, 3, 1000)
    assert all(type(v) is int for v in (params.max_new_tokens, params.top_k, params.seed, params.num_samples))


def test_the_draws_distribution_is_all_on_the_argmax_at_temperature_zero_and_sampling_probs_above():
    logits = np.array([[1.0, 3.0, 3.0, 0.5], [0.2, 0.1, 2.0, -1.0]])
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.7, top_k=2)]
    probs = sampling_distribution(logits, params)
    assert probs[0].tolist() == [0, 1, 0, 0]  # the lower id of the tie, as the greedy draw takes it
    assert np.array_equal(probs[1], sampling_probs(logits[1:], params[1:])[0])


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=0),
        dict(temperature=0.8),
        dict(temperature=1.3, top_k=3),
        dict(temperature=1.0, top_p=0.5),
        dict(temperature=0.9, min_p=0.2),
    ],
)
def test_the_alternatives_are_the_likeliest_with_their_probabilities_in_the_model_and_in_the_draw(settings):
    rng = np.random.default_rng(11)
    logits = (rng.normal(size=(6, 65)) * 2).astype(np.float32)
    logits[0, [3, 7]] = logits[0].max() + 1  # a tie for the likeliest: the lower id first
    params = rows_of(6, **settings)
    drawn = np.array([0, 5, 64, 1, 2, 3])
    found = top_alternatives(logits, params, drawn, 5)
    draw = sampling_distribution(logits, params)
    for r in range(6):
        order = sorted(range(65), key=lambda i: (-logits[r, i], i))[:5]
        assert found.ids[r].tolist() == order
        assert np.allclose(found.model[r], softmax(logits[r : r + 1])[0, order], rtol=0, atol=1e-15)
        assert found.sampled[r].tolist() == draw[r, order].tolist()
        assert found.drawn[r] == draw[r, drawn[r]]
    assert found.ids[0, :2].tolist() == [3, 7]
    if settings.get("top_k") == 3:
        assert (found.sampled[:, 3:] == 0).all() and (found.sampled[:, :3] > 0).all()  # the filter's removals are 0
