"""How export's commands fail: a usage error (exit 2) says what to change in one sentence; a
verification failure (exit 1) means a file did not match PyTorch and nothing was written."""

from __future__ import annotations

VERIFICATION_FAILED = 1


class UsageError(Exception):
    """Bad input: a flag, a path, a text; its message is the sentence the user sees."""


class VerificationError(Exception):
    """A file that does not match what it was made from; nothing was written."""


class Int8TooLossy(VerificationError):
    pass


class RingMismatch(VerificationError):
    pass


class AttentionMismatch(VerificationError):
    pass
