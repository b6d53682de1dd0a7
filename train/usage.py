"""How the project's commands refuse bad input: one sentence on stderr, as argparse's own
errors read (`PROG: error: ...`), and exit code 2, argparse's code for a usage error."""

from __future__ import annotations

import sys

USAGE_ERROR = 2


def fail(prog: str, message: str, code: int = USAGE_ERROR) -> int:
    """Print the refusal and return the exit code, for `return fail(...)` in a main()."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code
