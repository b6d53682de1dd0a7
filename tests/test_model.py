"""The model: exact seed parameter counts, causality, the KV cache and the window in it,
architecture options."""

import numpy as np
import pytest
import torch

from train.config import PRESETS, split_settings
from train.model import GPTConfig, GPTLanguageModel, model_size_mb
from train.rotary import apply_rotary, rotary_tables
from train.windows import sliding_window_mask
from webapp.inference.ring import ring_mask


def preset_model(name: str) -> GPTLanguageModel:
    model_fields, _ = split_settings(PRESETS[name])
    return GPTLanguageModel(GPTConfig(vocab_size=65, **model_fields))


@pytest.mark.parametrize("preset, printed", [("seed-0.2m", "0.209729"), ("seed-2.7m", "2.697281")])
def test_seed_parameter_counts_are_exact(preset, printed):
    model = preset_model(preset)
    # The seed prints `sum(p.numel() ...) / 1e6, 'M parameters'`: the same float formatting.
    assert f"{model.num_params() / 1e6} M parameters" == f"{printed} M parameters"


def test_model_size_counts_parameter_memory():
    model = preset_model("seed-0.2m")
    assert model_size_mb(model) == pytest.approx(209729 * 4 / 2**20)


def test_bad_head_split_is_refused_with_a_hint():
    with pytest.raises(ValueError, match=r"n_embd \(65\) must be divisible by n_head \(4\); try n_embd 64"):
        GPTConfig(n_embd=65, n_head=4)


OPTIONS = [
    {},
    dict(position="rotary", activation="relu2", norm="rmsnorm", bias=False, qk_norm=True, zero_init_proj=True),
    dict(activation="swiglu", tie_weights=True),
    dict(activation="gelu", position="rotary", tie_weights=True, qk_norm=True),
]


def small_model(**options) -> GPTLanguageModel:
    torch.manual_seed(0)
    model = GPTLanguageModel(GPTConfig(vocab_size=11, block_size=16, n_embd=32, n_head=4, n_layer=2, **options))
    if options.get("zero_init_proj"):  # zero projections would hide differences between positions
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def logits_with_one_character_changed(model, length: int, position: int, seed: int):
    """The logits of a random text, and of the same text with one character changed."""
    idx = torch.randint(0, 11, (2, length), generator=torch.Generator().manual_seed(seed))
    changed = idx.clone()
    changed[:, position] = (changed[:, position] + 1) % 11
    with torch.no_grad():
        return model(idx)[0], model(changed)[0]


@pytest.mark.parametrize("options", OPTIONS)
def test_causality_later_characters_never_change_earlier_logits(options):
    a, b = logits_with_one_character_changed(small_model(**options), 16, 9, seed=1)
    assert torch.equal(a[:, :9], b[:, :9])
    assert not torch.allclose(a[:, 9:], b[:, 9:])  # the change is visible from its position on


def plain_loop(model, idx, prefill: int):
    """What a runtime does with the graph: a prefill, then one cached step per token, each
    step's cache fed back. Returns every position's logits and the longest cache it held."""
    logits, _, past = model(idx[:, :prefill], past_kv=model.empty_cache(idx.size(0)))
    steps, longest = [logits], past[0][0].size(2)
    for t in range(prefill, idx.size(1)):
        logits, _, past = model(idx[:, t : t + 1], past_kv=past)
        steps.append(logits)
        longest = max(longest, past[0][0].size(2))
    return torch.cat(steps, dim=1), longest


@pytest.mark.parametrize("options", OPTIONS)
def test_the_plain_loop_past_the_window_equals_one_call_on_the_whole_text(options):
    model = small_model(**options)
    idx = torch.randint(0, 11, (3, 45), generator=torch.Generator().manual_seed(2))  # block_size 16: slides twice
    with torch.no_grad():
        full, _, cache = model(idx)  # longer than the window: the cached path, from an empty cache
        for prefill in (1, 7, 16, 20):
            steps, longest = plain_loop(model, idx, prefill)
            assert (steps - full).abs().max() <= 1e-5, prefill
            assert longest == 15  # block_size - 1: with the new character, one window
    assert cache[0][0].shape == (3, 4, 15, 8)


def ring_loop(model, idx, prefill: int, chunk: int = 1):
    """The server's ring step after a prefill by `decode`: the cached keys rotated at their
    positions into slots position % (block_size - 1), then `chunk` characters per step, their
    keys and values written into the slots of the characters that leave the window (the
    mask from webapp.inference.ring.ring_mask). Returns the logits of every position."""
    cfg = model.config
    S, B = cfg.block_size - 1, idx.size(0)
    cos, sin = rotary_tables(idx.size(1), cfg.head_dim, cfg.rope_base)
    logits, past = model.decode(idx[:, :prefill], model.empty_cache(B))
    kept = torch.arange(prefill - past[0][0].size(2), prefill)  # the positions the cache holds
    ring = [(torch.zeros(B, cfg.n_head, S, cfg.head_dim), torch.zeros(B, cfg.n_head, S, cfg.head_dim)) for _ in past]
    for (keys, values), (k, v) in zip(ring, past):
        keys[:, :, kept % S] = apply_rotary(k, cos[kept], sin[kept])
        values[:, :, kept % S] = v
    filled = np.full((B, S), -np.inf, np.float32)
    filled[:, kept % S] = 0
    steps = [logits]
    for t in range(prefill, idx.size(1), chunk):
        new_positions = torch.arange(t, min(t + chunk, idx.size(1)))
        mask = torch.from_numpy(ring_mask(filled, np.full(B, t), len(new_positions)))
        logits, new = model.step_ring(
            idx[:, new_positions],
            cos[new_positions].expand(B, -1, -1),
            sin[new_positions].expand(B, -1, -1),
            mask,
            ring,
        )
        for (keys, values), (k, v) in zip(ring, new):
            keys[:, :, new_positions % S], values[:, :, new_positions % S] = k, v
        filled[:, new_positions % S] = 0
        steps.append(logits)
    return torch.cat(steps, dim=1)


@pytest.mark.parametrize("options", [o for o in OPTIONS if o.get("position") == "rotary"])
def test_the_ring_step_past_the_window_equals_the_plain_loop(options):
    model = small_model(**options)
    idx = torch.randint(0, 11, (3, 45), generator=torch.Generator().manual_seed(2))  # block_size 16: slides twice
    with torch.no_grad():
        full, _, _ = model(idx)
        for prefill in (1, 7, 16, 20):  # an empty, a part-filled and a full ring
            assert (ring_loop(model, idx, prefill) - full).abs().max() <= 1e-5, prefill


@pytest.mark.parametrize("options", [o for o in OPTIONS if o.get("position") == "rotary"])
def test_the_ring_step_of_several_characters_at_once_equals_the_plain_loop(options):
    """A step of T characters (how the engine checks a draft: webapp/inference/engine.py) computes each
    one as T steps of one would, also where the window leaves the ring's oldest slots mid-step."""
    model = small_model(**options)
    idx = torch.randint(0, 11, (2, 50), generator=torch.Generator().manual_seed(3))  # block_size 16: slides three times
    with torch.no_grad():
        full, _, _ = model(idx)
        for prefill, chunk in ((1, 3), (7, 5), (16, 15), (20, 8)):  # 15 = block_size - 1, the most a step takes
            assert (ring_loop(model, idx, prefill, chunk) - full).abs().max() <= 1e-5, (prefill, chunk)


@pytest.mark.parametrize("options", OPTIONS)
def test_within_the_window_the_cached_path_is_the_training_forward(options):
    model = small_model(**options)
    idx = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        trained, _, none = model(idx)
        cached, _, _ = model(idx, past_kv=model.empty_cache(2))
    assert none is None
    assert (trained - cached).abs().max() <= 1e-5


@pytest.mark.parametrize("options", OPTIONS)
def test_each_character_sees_at_most_the_window(options):
    """Changing a character changes nothing at positions block_size or more after it in the
    learned-position model (the seed's crop); with rotary positions the sliding window reaches
    one window further per layer (receptive_field), and no further."""
    model = small_model(**options)
    a, b = logits_with_one_character_changed(model, 60, 5, seed=4)
    reach = 5 + model.config.receptive_field
    assert torch.equal(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:reach], b[:, 5:reach])
    assert (a[:, reach:] - b[:, reach:]).abs().max() <= 1e-5


@pytest.mark.parametrize("options", OPTIONS)
def test_a_prefill_of_the_receptive_field_equals_the_whole_prompt(options):
    model = small_model(**options)
    idx = torch.randint(0, 11, (2, 70), generator=torch.Generator().manual_seed(5))
    field = model.config.receptive_field
    with torch.no_grad():
        whole, _, whole_cache = model(idx, past_kv=model.empty_cache(2))
        tail, _, tail_cache = model(idx[:, -field:], past_kv=model.empty_cache(2))
        after_whole = model(idx[:, :1], past_kv=whole_cache)[0]
        after_tail = model(idx[:, :1], past_kv=tail_cache)[0]
    assert (whole[:, -1] - tail[:, -1]).abs().max() <= 1e-5
    assert (after_whole - after_tail).abs().max() <= 1e-5


def attention_by_hand(model: GPTLanguageModel, idx: torch.Tensor) -> torch.Tensor:
    """Every head's attention probabilities [B, n_layer, n_head, T, T] for a text within the
    window, computed apart from the model's attention code: each block's input captured from the
    training forward (scaled_dot_product_attention), its queries and keys taken through the
    block's own projection (and rotation), then softmax(q k^T / sqrt(head_dim)), causal."""
    inputs = []
    hooks = [
        block.attn.register_forward_pre_hook(lambda module, args: inputs.append(args[0])) for block in model.blocks
    ]
    with torch.no_grad():
        model(idx)
    for hook in hooks:
        hook.remove()
    T, cfg, weights = idx.size(1), model.config, []
    for block, x in zip(model.blocks, inputs):
        with torch.no_grad():
            qk, _ = block.attn.queries_keys_values(x)
        if cfg.position == "rotary":
            qk = apply_rotary(qk, *rotary_tables(T, cfg.head_dim, cfg.rope_base))
        q, k = qk.split(cfg.n_head, dim=1)
        scores = (q @ k.transpose(-2, -1)) / cfg.head_dim**0.5
        weights.append(scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")).softmax(-1))
    return torch.stack(weights, dim=1)


@pytest.mark.parametrize("options", OPTIONS)
def test_the_attention_weights_are_each_heads_softmax_over_its_window(options):
    """model.attention (what the attention file exports) against the weights computed by hand:
    slot j of position t's window holds its weight on character t - block_size + 1 + j (its own
    last), and slots before the text hold 0."""
    model = small_model(**options)
    idx = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = model.attention(idx)  # [B, L, H, T, block_size]
    by_hand = attention_by_hand(model, idx)  # [B, L, H, T, T]: column k is character k
    want = torch.zeros_like(got)
    for t in range(16):
        want[..., t, 15 - t :] = by_hand[..., t, : t + 1]
    assert got.shape == (2, 2, 4, 16, 16)
    assert (got - want).abs().max() <= 1e-5
    assert (got.sum(-1) - 1).abs().max() <= 1e-5
    assert torch.equal(got[..., 0, :15], torch.zeros_like(got[..., 0, :15]))  # the first character sees itself alone


@pytest.mark.parametrize("options", OPTIONS)
def test_the_attention_after_a_cache_equals_the_whole_texts_past_the_window(options):
    """What the pages ask for: a prefill's cache, then the last characters, as in one call."""
    model = small_model(**options)
    idx = torch.randint(0, 11, (1, 45), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        whole = model.attention(idx)
        _, past = model.decode(idx[:, :44], model.empty_cache(1))
        last = model.attention(idx[:, 44:], past)
    assert (whole[..., 44:, :] - last).abs().max() <= 1e-5


def test_learned_positions_decode_exactly_as_the_seeds_generate():
    model = small_model()
    prompt = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(6))
    seed = model.generate(prompt, 40, temperature=0)[:, 5:]
    cached = torch.cat(list(model.generate_cached(prompt, 40, temperature=0)), dim=1)
    assert torch.equal(seed, cached)


def test_sliding_window_mask_lets_each_query_see_the_last_window_keys():
    mask = sliding_window_mask(past_len=3, T=2, window=3)
    assert mask.shape == (2, 5)
    visible = (mask == 0).int().tolist()
    assert visible == [[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]]  # queries at positions 3 and 4


def test_rotary_is_the_pairwise_rotation_bit_for_bit():
    # apply_rotary is written for few exported operators; it must still be exactly the
    # rotation of (first half, second half) pairs by the tables' angles.
    x = torch.randn(2, 3, 9, 16)  # [B, heads, T, D]
    cos, sin = rotary_tables(14, 16, 10000.0)
    cos, sin = cos[5:], sin[5:]  # positions 5..13
    c, s = cos[:, :8], sin[:, 8:]
    assert torch.equal(sin[:, :8], -s)
    assert torch.equal(cos[:, 8:], c)
    x1, x2 = x.chunk(2, dim=-1)
    assert torch.equal(apply_rotary(x, cos, sin), torch.cat((x1 * c - x2 * s, x1 * s + x2 * c), dim=-1))


def test_rotary_tables_keep_float32_precision_at_long_positions():
    """A prefill of a long text rotates by large angles; a plain loop, by small ones. Both must
    be within float32 rounding of the true cosines and sines, or the two disagree."""
    cos, sin = rotary_tables(4096, 32, 10000.0)
    angles = torch.arange(4096, dtype=torch.float64)[:, None] * 10000.0 ** (
        -torch.arange(0, 32, 2, dtype=torch.float64) / 32
    )
    assert (cos[:, :16].double() - angles.cos()).abs().max() < 3e-7
    assert (sin[:, 16:].double() - angles.sin()).abs().max() < 3e-7


def test_tied_weights_share_one_tensor_and_count_once():
    untied, tied = small_model(), small_model(tie_weights=True)
    assert tied.lm_head.weight is tied.token_embedding.weight
    assert untied.num_params() - tied.num_params() == 11 * 32


def test_loss_is_cross_entropy_of_the_logits():
    model = small_model()
    idx = torch.randint(0, 11, (2, 16))
    logits, loss, _ = model(idx, idx)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), idx.reshape(-1))
    assert loss.item() == pytest.approx(expected.item())


def test_seed_generate_is_greedy_at_temperature_zero():
    model = small_model()
    out = model.generate(torch.zeros(1, 1, dtype=torch.long), 20, temperature=0)
    assert out.shape == (1, 21)
    for t in range(1, 21):  # every token is the argmax given what came before
        logits, _, _ = model(out[:, max(0, t - 16) : t])
        assert out[0, t] == logits[0, -1].argmax()


@pytest.mark.parametrize("shape", [(48, 192), (192, 48), (96, 384)])
def test_muon_orthogonalizes_updates(shape):
    """Five Newton-Schulz steps bring every singular value of a random rectangular matrix into
    the quintic's band (about 0.7..1.2); a nearly singular direction would stay smaller."""
    from train.optim import orthogonalize

    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    s = torch.linalg.svdvals(orthogonalize(g))
    assert s.min() > 0.6
    assert s.max() < 1.25
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(orthogonalize(g).flatten(), (u @ vh).flatten(), dim=0) > 0.95


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    from train.config import TrainConfig
    from train.optim import build_optimizers

    model = GPTLanguageModel(GPTConfig(n_embd=32, n_head=4, n_layer=2, bias=False))
    opts = build_optimizers(model, TrainConfig(optimizer="muon", learning_rate=2e-3, muon_lr=0.02))
    muon = {id(p) for g in opts.named["muon"].param_groups for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in muon}
    assert names == {n for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2}
    opts.set_lr(1e-3)
    assert [g["lr"] for g in opts.param_groups] == [pytest.approx(1e-3), pytest.approx(1e-2)]
    state = opts.state_dict()
    assert set(state) == {"adamw", "muon"}
    with pytest.raises(ValueError, match="optimizer state holds"):
        build_optimizers(model, TrainConfig()).load_state_dict(state)


def test_flops_count_matches_the_parameters():
    from train.flops import matmul_params, train_flops_per_char

    cfg = GPTConfig(vocab_size=65, n_embd=192, n_head=6, n_layer=6, block_size=128, bias=False, position="rotary")
    model = GPTLanguageModel(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert matmul_params(cfg) == linear
    assert train_flops_per_char(cfg) == 6 * linear + 12 * 6 * 128 * 192


@pytest.mark.parametrize("options", OPTIONS)
def test_decode_with_attention_is_decode_and_attention(options):
    """What export traces for both files at once computes each exactly as alone."""
    model = small_model(**options)
    idx = torch.randint(0, 11, (2, 21), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        _, past = model.decode(idx[:, :9], model.empty_cache(2))
        logits, presents, weights = model.decode_with_attention(idx[:, 9:], past)
        want_logits, want_presents = model.decode(idx[:, 9:], past)
        assert torch.equal(logits, want_logits) and torch.equal(weights, model.attention(idx[:, 9:], past))
    assert all(torch.equal(a, b) for pair, want in zip(presents, want_presents) for a, b in zip(pair, want))
