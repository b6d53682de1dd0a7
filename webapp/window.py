"""The window rule: how much of the text each next character is predicted from (pure functions)."""

from __future__ import annotations


def context_length(n: int, block_size: int, keep: int) -> int:
    """How many of the last characters predict the next one, when the text so far has n.

    The window rule every decoder follows: the context grows to block_size; the next character
    would overflow it, so the context drops to the last `keep` characters and grows again.
    keep == block_size is the seed's `generate` (always the last block_size characters, one
    full recompute per character past the window); a smaller keep lets a KV-cached decoder
    recompute only once every block_size - keep + 1 characters.
    """
    if not 1 <= keep <= block_size:
        raise ValueError(f"keep must be from 1 to block_size ({block_size}), not {keep}")
    if n <= block_size:
        return n
    return keep + (n - block_size - 1) % (block_size - keep + 1)


def default_keep(block_size: int) -> int:
    """The window the decoders keep when the context overflows: half of it."""
    return max(1, block_size // 2)
