"""The chargpt model: a decoder-only transformer over characters, in one file.

The seed's classes are all here: the attention heads (fused into one `MultiHeadAttention`,
one matmul for every head's query/key/value instead of a Python loop over `Head` objects),
`FeedForward`, `Block` and `GPTLanguageModel`. With the default `GPTConfig` options the
parameter count equals the seed's exactly (0.209729 M for n_embd 64, 4 heads, 4 layers).

The forward pass optionally takes and returns a key/value cache, which is what the ONNX
export and every fast decoder use: positions are derived from the cache's length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
from torch.nn import functional as F

POSITION_KINDS = ("learned", "rotary")
ACTIVATIONS = ("relu", "gelu", "relu2", "swiglu")
NORMS = ("layernorm", "rmsnorm")

# One (key, value) pair per layer, each [batch, n_head, past_sequence, head_dim].
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 32  # longest context the model sees (and the window a decoder slides)
    n_embd: int = 64
    n_head: int = 4
    n_layer: int = 4
    dropout: float = 0.0
    # Architecture options. The defaults are the seed's: biases everywhere but on the
    # query/key/value projection, learned positions, ReLU, LayerNorm, an untied output head.
    bias: bool = True
    position: str = "learned"
    activation: str = "relu"
    norm: str = "layernorm"
    tie_weights: bool = False
    qk_norm: bool = False  # normalise queries and keys per head (stabilises high learning rates)
    mlp_ratio: int = 4
    zero_init_proj: bool = False  # start each residual branch's output projection at zero
    rope_base: float = 10000.0
    # Dropout on the attention weights too, as the seed did. Off, dropout acts on the residual
    # branches only and CPU attention keeps its fused kernel (19% more characters/s here).
    attention_dropout: bool = True

    def __post_init__(self) -> None:
        problems = []
        if min(self.vocab_size, self.block_size, self.n_embd, self.n_head, self.n_layer) < 1:
            problems.append("vocab_size, block_size, n_embd, n_head and n_layer must be positive")
        elif self.n_embd % self.n_head:
            problems.append(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                f"try n_embd {self.n_head * max(1, round(self.n_embd / self.n_head))}"
            )
        elif self.position == "rotary" and self.head_dim % 2:
            problems.append(f"rotary positions need an even head size, not {self.head_dim}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), not {self.dropout}")
        for name, allowed in (("position", POSITION_KINDS), ("activation", ACTIVATIONS), ("norm", NORMS)):
            if getattr(self, name) not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """Build from a saved dict; unknown keys are an error, so a newer format is not misread."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}")
        return cls(**d)


def make_norm(config: GPTConfig, dim: int) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=1e-5)
    return nn.LayerNorm(dim, bias=config.bias)


def rotary_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin for rotary embeddings at the given positions, each [T, 1, head_dim]
    (broadcast over heads): the half-size angles twice, the sine negated in the first half, so
    that apply_rotary is three elementwise operations (few operators in the exported graph)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos(), angles.sin()
    return torch.cat((cos, cos), dim=-1)[:, None], torch.cat((-sin, sin), dim=-1)[:, None]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (first half, second half) of x [B, T, heads, D] by the position angles:
    (x1 cos - x2 sin, x2 cos + x1 sin), bit for bit."""
    x32 = x.float()  # rotated in float32 under bf16 autocast too, then cast back
    x1, x2 = x32.chunk(2, dim=-1)
    rotated = x32 * cos + torch.cat((x2, x1), dim=-1) * sin
    return rotated.type_as(x)


class MultiHeadAttention(nn.Module):
    """n_head causal self-attention heads computed together: one fused q/k/v projection and
    PyTorch's scaled_dot_product_attention (a fused kernel) in place of the seed's per-head loop."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)  # the seed's heads had no bias
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.q_norm = make_norm(config, self.head_dim) if config.qk_norm else None
        self.k_norm = make_norm(config, self.head_dim) if config.qk_norm else None
        self.dropout = config.dropout if config.attention_dropout else 0.0
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rotary=None, past=None, mask=None):
        """past (the cached keys and values) comes with mask, the additive causal mask
        [T, past_len + T] (0 where a query may look, -inf elsewhere)."""
        B, T, C = x.shape
        H, D = self.n_head, self.head_dim
        qk, v = self.qkv(x).view(B, T, 3 * H, D).split((2 * H, H), dim=2)  # [B, T, 2H, D], [B, T, H, D]
        if self.q_norm is not None:
            q, k = qk.split(H, dim=2)
            qk = torch.cat((self.q_norm(q), self.k_norm(k)), dim=2)
        if rotary is not None:
            qk = apply_rotary(qk, *rotary)  # queries and keys together: half the operators
        # -> [B, n_head, T, head_dim]
        q, k = qk.transpose(1, 2).split(H, dim=1)
        v = v.transpose(1, 2)
        dropout_p = self.dropout if self.training else 0.0
        if past is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
        else:
            # Written out rather than scaled_dot_product_attention: this is the path the ONNX
            # graph and every cached decoder run, and its export is 5 operators a layer where
            # the exporter's decomposition of the fused kernel is 17.
            k = torch.cat((past[0], k), dim=2)
            v = torch.cat((past[1], v), dim=2)
            # Each side scaled by D^-1/4, as PyTorch's own decomposition of the fused kernel
            # does: it keeps the export within 1e-4 of the fused kernel (one scale on q doubled
            # the largest difference).
            scale = D**-0.25
            att = (q * scale) @ (k.transpose(-2, -1) * scale) + mask  # [B, H, T, past_len + T]
            y = F.dropout(att.softmax(dim=-1), dropout_p, self.training) @ v
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y)), (k, v)


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

    def forward(self, x, rotary=None, past=None, mask=None):
        a, present = self.attn(self.ln1(x), rotary, past, mask)
        x = x + a
        x = x + self.ffwd(self.ln2(x))
        return x, present


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

    def forward(self, idx, targets=None, past_kv: KVCache | None = None):
        """idx [B, T] token ids -> (logits [B, T, vocab], loss or None, present KV cache).

        With past_kv (one (key, value) per layer, possibly of length 0), the new tokens take
        the positions after the cached ones and attend to them.
        """
        B, T = idx.shape
        past_len = past_kv[0][0].size(2) if past_kv is not None else 0
        positions = torch.arange(past_len, past_len + T, device=idx.device)
        x = self.token_embedding(idx)  # [B, T, C]
        rotary = None
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)
        else:
            rotary = rotary_tables(positions, self.config.head_dim, self.config.rope_base)
        mask = None
        if past_kv is not None:  # query i (at positions[i]) sees the keys up to its position
            key_positions = torch.arange(past_len + T, device=idx.device)
            mask = torch.zeros(T, past_len + T, device=idx.device).masked_fill(
                key_positions[None, :] > positions[:, None], float("-inf"))
        x = self.drop(x)
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, rotary, past_kv[i] if past_kv is not None else None, mask)
            presents.append(present)
        logits = self.lm_head(self.ln_f(x))  # [B, T, vocab]
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss, presents

    @torch.no_grad()
    def generate(self, idx, max_new_tokens: int, temperature: float = 1.0, generator=None, window=None):
        """The seed's generation: recompute the whole (cropped) context for every new token.

        Kept as the plain reference that faster decoders are checked against; temperature 0
        is greedy. window(n) gives how many of the last n tokens predict the next (a decoder's
        window rule, webapp.window.context_length); None is the seed's crop, the last
        block_size. Returns idx with the new tokens appended.
        """
        new = list(self.generate_steps(idx, max_new_tokens, temperature, generator, window))
        return torch.cat([idx, *new], dim=1)

    @torch.no_grad()
    def generate_steps(self, idx, max_new_tokens: int, temperature: float = 1.0, generator=None, window=None):
        """`generate` one step at a time: yields each new token, [B, 1]."""
        window = window or (lambda n: min(n, self.config.block_size))
        for _ in range(max_new_tokens):
            logits, _, _ = self(idx[:, -window(idx.size(1)) :])
            logits = logits[:, -1, :].float()
            if temperature == 0:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                probs = F.softmax(logits / temperature, dim=-1)
                next_id = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, next_id), dim=1)
            yield next_id


def model_size_mb(model: nn.Module) -> float:
    """Memory held by parameters and buffers, in MiB (how the seed reported "Model size")."""
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20

