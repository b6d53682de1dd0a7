"""A run's metrics.jsonl: one JSON record per line (train losses, evaluations, the final
whole-split loss), appended as training goes. The one writer and the one reader."""

from __future__ import annotations

import json
from pathlib import Path

from .files import atomic_write

METRICS = "metrics.jsonl"


def format_record(record: dict) -> str:
    return json.dumps(record) + "\n"


def append_metrics(run_dir: Path, record: dict) -> None:
    with open(Path(run_dir) / METRICS, "a", encoding="utf-8") as f:
        f.write(format_record(record))


def rewrite_metrics(path: Path, records: list[dict]) -> None:
    """Replace the file by `records`, atomically (a resumed run drops the lines it will redo)."""
    text = "".join(map(format_record, records))
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def parse_metrics_line(line: str) -> dict | None:
    """One record, or None for a line that a crash or a full disk cut short."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_metrics(path: Path) -> list[dict]:
    """Every whole record of a metrics.jsonl; a line cut short is skipped."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    return [r for r in map(parse_metrics_line, lines) if r is not None]


def trim_metrics(run_dir: Path, step: int, last_eval: int | None) -> None:
    """Keep the metric lines that the checkpoint being resumed (at `step`) had behind it: a
    killed run may have written lines past it, and those steps are about to be redone. An
    evaluation at `step` itself counts only if the checkpoint recorded it; a final record
    never does (a resumed run has not finished)."""
    path = run_dir / METRICS
    if not path.exists():
        return
    records = read_metrics(path)

    def behind_checkpoint(r: dict) -> bool:
        at = r.get("step", 0)
        if r.get("kind") == "final" or at > step:
            return False
        return at < step or r.get("kind") != "eval" or last_eval == step

    rewrite_metrics(path, [r for r in records if behind_checkpoint(r)])
