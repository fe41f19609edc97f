"""Test helper: make a streaming query replay its last micro-batch, as after a crash."""

from __future__ import annotations

from pathlib import Path


def forget_last_commit(checkpoint: Path) -> Path:
    """Delete the newest commit marker (and its checksum) so the next start re-runs that
    batch, as if the process died between writing the batch and committing it."""
    commits = checkpoint / "commits"
    last = max((p for p in commits.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    last.unlink()
    (commits / f".{last.name}.crc").unlink(missing_ok=True)
    return last
