"""The chargpt model: a decoder-only transformer over characters. The lecture's classes are all
here: the attention heads (fused into one `MultiHeadAttention`, one matmul for every head's
query/key/value instead of a loop over `Head` objects), `FeedForward`, `Block` and
`GPTLanguageModel`; its settings (`GPTConfig`) are in model_config.py, rotary embeddings and the
window's masks in rotary.py and windows.py. With the default options the parameter count equals
the lecture's (0.209729 M for n_embd 64, 4 heads, 4 layers).

The forward pass optionally takes and returns a key/value cache, which is what the ONNX
export and every decoder use. The window is part of that cached path (`decode`), so that a
runtime's plain loop (prefill, then each `present` fed back as the next `past`) writes text of
any length at a constant cost per character:
- rotary models: every layer's query sees at most the last block_size positions (a sliding
  window); keys are cached *before* rotation and rotated by their place in the window at each
  step, so no angle ever exceeds the ones seen in training; the cache keeps the last
  block_size - 1 positions.
- learned-position models cannot shift a cached position, so their cache holds the window's
  token embeddings (n_embd = n_head * head_dim numbers per character) and every step runs the
  network over the last block_size characters: exactly the lecture's `generate`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn
from torch.nn import functional as F

from .model_config import GPTConfig
from .rotary import apply_rotary, rotary_tables
from .windows import last_positions, sliding_window_mask, window_weights

# One (key, value) pair per layer, each [batch, n_head, past_sequence, head_dim].
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


def make_norm(config: GPTConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=1e-5)
    return nn.LayerNorm(dim, bias=config.bias)


class MultiHeadAttention(nn.Module):
    """n_head causal self-attention heads computed together: one fused q/k/v projection and
    PyTorch's scaled_dot_product_attention (a fused kernel) in place of the lecture's per-head loop."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.window = config.block_size
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # the lecture's heads had no bias
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.q_norm = make_norm(config, self.head_dim) if config.qk_norm else None
        self.k_norm = make_norm(config, self.head_dim) if config.qk_norm else None
        self.dropout = config.attention_weight_dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def queries_keys_values(self, x):
        """x [B, T, C] -> queries and keys together [B, 2H, T, D] (not rotated), values [B, H, T, D]."""
        B, T, C = x.shape
        H, D = self.n_head, self.head_dim
        qk, v = self.qkv(x).view(B, T, 3 * H, D).split((2 * H, H), dim=2)  # [B, T, 2H, D], [B, T, H, D]
        if self.q_norm is not None:
            q, k = qk.split(H, dim=2)
            qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=2)
        return qk.transpose(1, 2), v.transpose(1, 2)

    def forward(self, x, rotary=None, past=None, mask=None, ring=None):
        """Without past: plain causal attention over x (training; T <= block_size).
        With past (the cached keys, before rotation, and values; possibly of length 0), the
        cached path: rotary holds the tables for positions 0..past_len + T - 1, mask is the
        additive sliding-window mask [T, past_len + T], and the new cache is returned.
        With ring: the ring step (see step_ring). Returns (output, present, the attention
        probabilities [B, H, T, past_len + T] where the path computes them: the cached one)."""
        if ring is not None:
            return self.step_ring(x, rotary, ring, mask)
        T = x.shape[1]
        H, D = self.n_head, self.head_dim
        qk, v = self.queries_keys_values(x)  # [B, heads, T, head_dim]
        dropout_p = self.dropout if self.training else 0.0
        if past is None:
            if rotary is not None:
                qk = apply_rotary(qk, *rotary)  # queries and keys together: half the operators
            q, k = qk.split(H, dim=1)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
            present = probs = None
        else:
            q, k = qk.split(H, dim=1)
            k = torch.cat((past[0], k), dim=2)  # [B, H, past_len + T, D], not rotated
            v = torch.cat((past[1], v), dim=2)
            keys = k
            if rotary is not None:  # each key by its place in this call's positions
                cos, sin = rotary
                q = apply_rotary(q, cos[-T:], sin[-T:])
                keys = apply_rotary(k, cos, sin)
            # Written out rather than scaled_dot_product_attention: this is the path the ONNX
            # graph and every cached decoder run, and its export is 5 operators a layer where
            # the exporter's decomposition of the fused kernel is 17. Each side scaled by
            # D^-1/4, as PyTorch's own decomposition of the fused kernel does: it keeps the
            # export within 1e-4 of the fused kernel (one scale on q doubled the largest difference).
            scale = D**-0.25
            att = (q * scale) @ (keys.transpose(-2, -1) * scale) + mask  # [B, H, T, past_len + T]
            probs = att.softmax(dim=-1)
            y = F.dropout(probs, dropout_p, self.training) @ v
            present = (last_positions(k, self.window - 1), last_positions(v, self.window - 1))
        return self.output(y), present, probs

    def output(self, y):
        """The heads' outputs y [B, H, T, D], joined and projected: [B, T, C]."""
        B, H, T, D = y.shape
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, H * D)))

    def step_ring(self, x, rotary, ring, mask):
        """T new positions per row (x [B, T, C]) against a ring of cached keys, rotated at their
        own positions, and values ([B, H, S, D] each, S = block_size - 1, in any order: rotary
        attention depends only on the distance between positions, and attention on no order).
        rotary: cos and sin [B, 1, T, D] at each row's new positions; mask [B, 1, T, S + T],
        additive: what each new position sees of the ring's slots (-inf on empty slots and on
        those its window has left) and of the new positions (causal). Returns the output and
        the new positions' keys (rotated) and values [B, H, T, D], for the caller to write into
        the ring. The cache is read once and never copied, rotated or sliced: a step costs what
        its arithmetic costs (chargpt's own fast path; decode is the contract every runtime runs)."""
        H, D = self.n_head, self.head_dim
        S = ring[0].shape[2]
        qk, v = self.queries_keys_values(x)
        q, k = apply_rotary(qk, *rotary).split(H, dim=1)  # [B, H, T, D]
        q = q * D**-0.5  # one side only: scaling the ring's keys would be a pass over the cache
        ring_keys, ring_values = ring
        scores = (
            torch.cat((q @ ring_keys.transpose(-2, -1), q @ k.transpose(-2, -1)), dim=-1) + mask
        )  # [B, H, T, S + T]
        att = scores.softmax(dim=-1)
        y = att[..., :S] @ ring_values + att[..., S:] @ v
        return self.output(y), (k, v), None


class FeedForward(nn.Module):
    """Position-wise MLP: Linear -> activation -> Linear (SwiGLU gates the hidden layer)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.n_embd
        self.activation = config.activation
        if config.activation == "swiglu":
            # Two thirds of the width keeps the parameter count of a plain MLP of the same ratio.
            hidden = 2 * hidden // 3
            self.gate = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.fc(x)
        if self.activation == "relu":
            h = F.relu(h)
        elif self.activation == "gelu":
            h = F.gelu(h)
        elif self.activation == "relu2":
            h = F.relu(h).square()
        else:  # swiglu
            h = F.silu(self.gate(x)) * h
        return self.dropout(self.proj(h))


class Block(nn.Module):
    """Transformer block: communication (attention) then computation (MLP), pre-norm residuals."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = make_norm(config, config.n_embd)
        self.attn = MultiHeadAttention(config)
        self.ln2 = make_norm(config, config.n_embd)
        self.ffwd = FeedForward(config)

    def forward(self, x, rotary=None, past=None, mask=None, ring=None):
        a, present, probs = self.attn(self.ln1(x), rotary, past, mask, ring)
        x = x + a
        x = x + self.ffwd(self.ln2(x))
        return x, present, probs


class GPTLanguageModel(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = (
            nn.Embedding(config.block_size, config.n_embd) if config.position == "learned" else None
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.bias)
        self.apply(self._init_weights)
        if config.zero_init_proj:
            for block in self.blocks:
                nn.init.zeros_(block.attn.proj.weight)
                nn.init.zeros_(block.ffwd.proj.weight)
        if config.tie_weights:
            self.lm_head.weight = self.token_embedding.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # a tied weight is counted once

    def set_dropout(self, p: float) -> None:
        """Set every dropout probability to what a config with dropout p would have built."""
        self.config = replace(self.config, dropout=p)
        for module in self.modules():
            if isinstance(module, nn.Dropout):
                module.p = p
            elif isinstance(module, MultiHeadAttention):
                module.dropout = self.config.attention_weight_dropout

    def forward(self, idx, targets=None, past_kv: KVCache | None = None):
        """idx [B, T] token ids -> (logits [B, T, vocab], loss or None, present cache or None).

        Without past_kv, a text that fits the window (T <= block_size) takes the training
        path: plain causal attention, no cache. With past_kv (one (key, value) pair per layer,
        possibly of length 0), or a longer text, it takes the cached path (`decode`): the new
        characters follow the cached ones, each sees at most the last block_size, and the new
        cache is returned.
        """
        B, T = idx.shape
        if past_kv is None and T <= self.config.block_size:
            x = self.token_embedding(idx)  # [B, T, C]
            rotary = None
            if self.position_embedding is not None:
                x = x + self.position_embedding(torch.arange(T, device=idx.device))
            else:
                rotary = rotary_tables(T, self.config.head_dim, self.config.rope_base, idx.device)
            x = self.drop(x)
            for block in self.blocks:
                x, _, _ = block(x, rotary)
            logits, presents = self.lm_head(self.ln_f(x)), None  # [B, T, vocab]
        else:
            logits, presents = self.decode(idx, past_kv if past_kv is not None else self.empty_cache(B, idx.device))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss, presents

    def empty_cache(self, batch: int, device=None) -> KVCache:
        c = self.config
        empty = torch.zeros(batch, c.n_head, 0, c.head_dim, device=device)
        return [(empty, empty) for _ in range(c.n_layer)]

    def decode(self, idx, past_kv: KVCache) -> tuple[torch.Tensor, KVCache]:
        """The cached path (what the ONNX graph is): idx [B, T] follows the past_len characters
        that past_kv holds -> (logits [B, T, vocab], the cache of the last block_size - 1
        characters). Feeding each returned cache back as the next past_kv (the plain loop)
        equals one call on the whole text."""
        logits, presents, _ = self.cached_path(idx, past_kv)
        return logits, presents

    def attention(self, idx, past_kv: KVCache | None = None) -> torch.Tensor:
        """Where every head looked, on the cached path (what `decode` computes, and what the
        extra attention ONNX file returns): idx [B, T] follows the characters past_kv holds (none
        when it is None) -> [B, n_layer, n_head, T, block_size], each new position's attention
        probabilities over its window (`window_weights`: its own character last, 0 before the
        text's first). Each row sums to 1, and no position sees a later one."""
        if past_kv is None:
            past_kv = self.empty_cache(idx.size(0), idx.device)
        return self.cached_path(idx, past_kv, attention=True)[2]

    def decode_with_attention(self, idx, past_kv: KVCache) -> tuple[torch.Tensor, KVCache, torch.Tensor]:
        """`decode` and `attention` together (what export traces for both ONNX files at once):
        rotary models compute them in one pass; learned ones run decode's fused attention, which
        gives no weights, then `attention`."""
        if self.position_embedding is None:
            return self.cached_path(idx, past_kv, attention=True)
        return (*self.decode(idx, past_kv), self.attention(idx, past_kv))

    def cached_path(self, idx, past_kv: KVCache, attention: bool = False):
        """`decode`, and with attention=True the weights `attention` returns: (logits, presents,
        weights or None)."""
        if self.position_embedding is not None:
            return self.decode_learned(idx, past_kv, attention)
        B, T = idx.shape
        past_len = past_kv[0][0].size(2)
        rotary = rotary_tables(past_len + T, self.config.head_dim, self.config.rope_base, idx.device)
        mask = sliding_window_mask(past_len, T, self.config.block_size, idx.device)
        x = self.drop(self.token_embedding(idx))
        presents, weights = [], []
        for block, past in zip(self.blocks, past_kv):
            x, present, probs = block(x, rotary, past, mask)
            presents.append(present)
            if attention:
                queries = torch.arange(past_len, past_len + T, device=idx.device)
                weights.append(window_weights(probs, queries, self.config.block_size))  # [B, H, T, W]
        return self.lm_head(self.ln_f(x)), presents, torch.stack(weights, dim=1) if attention else None

    def step_ring(self, idx, cos, sin, mask, ring: KVCache) -> tuple[torch.Tensor, KVCache]:
        """The ring step (rotary models; what the extra ring ONNX file is): idx [B, T], each
        row's next T characters (one while decoding; more to check a draft of them at once),
        at the positions whose rotary cos and sin [B, T, head_dim] are given; ring: per layer,
        the keys (rotated at their positions) and values of the characters before them, the
        row's last block_size - 1, [B, n_head, block_size - 1, head_dim], in any slot order;
        mask [B, T, block_size - 1 + T], additive (ring_mask in webapp/inference/ring.py). -> (logits
        [B, T, vocab], per layer the new characters' keys and values [B, n_head, T, head_dim]).
        The caller writes them into the slots of the characters that leave the window; then
        this equals `decode`'s plain loop (tests/test_model.py)."""
        rotary = (cos[:, None], sin[:, None])
        mask = mask[:, None]
        x = self.token_embedding(idx)
        new = []
        for block, pair in zip(self.blocks, ring):
            x, key_value, _ = block(x, rotary, mask=mask, ring=pair)
            new.append(key_value)
        return self.lm_head(self.ln_f(x)), new

    def decode_learned(self, idx, past_kv: KVCache, attention: bool = False):
        """Learned positions: every layer's cache holds the same thing, the token embeddings
        of the last characters (as [B, n_head, past_len, head_dim]); each new character is
        predicted by a plain forward pass over its own last block_size characters. With
        attention, the blocks run the written-out attention (the cached path's, with nothing
        cached), which returns its probabilities."""
        B, T = idx.shape
        W, C = self.config.block_size, self.config.n_embd
        past = past_kv[0][0]
        past_len = past.size(2)
        tokens = torch.cat(
            (past.transpose(1, 2).reshape(B, past_len, C), self.token_embedding(idx)), dim=1
        )  # [B, L, C]
        length = past_len + T
        query = torch.arange(past_len, length, device=idx.device)  # each new character's index in tokens
        first = (query - (W - 1)).clamp(min=0)  # where its window starts
        # [T, W] indices of each window; slots after the query (a window not yet full) repeat
        # the last character and are never seen by it (causal attention)
        slots = (first[:, None] + torch.arange(W, device=idx.device)[None, :]).clamp(max=length - 1)
        x = tokens[:, slots].reshape(B * T, W, C) + self.position_embedding(torch.arange(W, device=idx.device))
        x = self.drop(x)
        own = query - first  # each new character's place in its window
        nothing = torch.zeros(B * T, self.config.n_head, 0, self.config.head_dim, device=idx.device)
        causal = sliding_window_mask(0, W, W, idx.device)
        weights = []
        for block in self.blocks:
            if not attention:
                x, _, _ = block(x)
                continue
            x, _, probs = block(x, past=(nothing, nothing), mask=causal)  # probs [B * T, H, W, W]
            H = probs.shape[1]
            rows = probs.view(B, T, H, W, W).gather(3, own.view(1, T, 1, 1, 1).expand(B, T, H, 1, W)).squeeze(3)
            weights.append(window_weights(rows.transpose(1, 2), own, W))  # [B, H, T, W]
        x = x.view(B, T, W, C)[:, torch.arange(T, device=idx.device), own]  # [B, T, C]
        cache = last_positions(tokens.view(B, length, self.config.n_head, self.config.head_dim).transpose(1, 2), W - 1)
        return (
            self.lm_head(self.ln_f(x)),
            [(cache, cache)] * self.config.n_layer,
            torch.stack(weights, 1) if attention else None,
        )

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, generator=None):
        """The lecture's generation, recomputing the last block_size characters for every new
        token (temperature 0: greedy); returns idx with the new tokens appended. The reference the
        cached path is checked against: equal for learned positions, close for rotary ones."""
        new = list(self.generate_steps(idx, max_new_tokens, temperature, generator))
        return torch.cat([idx, *new], dim=1)

    @torch.no_grad()
    def generate_steps(self, idx, max_new_tokens: int, temperature: float = 1.0, generator=None):
        """`generate` one step at a time: yields each new token, [B, 1]."""
        for _ in range(max_new_tokens):
            logits, _, _ = self(idx[:, -self.config.block_size :])
            next_id = sample(logits[:, -1], temperature, generator)
            idx = torch.cat((idx, next_id), dim=1)
            yield next_id

    @torch.no_grad()
    def generate_cached(self, idx, max_new_tokens: int, temperature: float = 1.0, generator=None):
        """The plain loop that every runtime runs on the exported graph: one prefill of the
        last receptive_field tokens, then one cached step per new token. Yields [B, 1]."""
        logits, past = self.decode(idx[:, -self.config.receptive_field :], self.empty_cache(idx.size(0), idx.device))
        for step in range(max_new_tokens):
            next_id = sample(logits[:, -1], temperature, generator)
            yield next_id
            if step < max_new_tokens - 1:
                logits, past = self.decode(next_id, past)


def sample(logits: torch.Tensor, temperature: float, generator=None) -> torch.Tensor:
    """The next token [B, 1] from the last position's logits [B, vocab]: greedy at temperature 0."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    return torch.multinomial(F.softmax(logits / temperature, dim=-1), num_samples=1, generator=generator)


def model_size_mb(model: nn.Module) -> float:
    """Memory held by parameters and buffers, in MiB (how the lecture reported "Model size")."""
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20
