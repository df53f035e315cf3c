"""Secrets the stack generates for itself on first start and keeps in a volume, mode 600.

A secret is created once, atomically (written to a temporary file, then renamed), and never
printed. Later starts read it back, so restarting anything keeps sessions and encrypted state.
"""

from __future__ import annotations

import os
import secrets as _random
from pathlib import Path


def ensure_secret(path: str | os.PathLike[str], nbytes: int = 32, uid: int | None = None, gid: int | None = None) -> bool:
    """Create `path` holding a random hex secret unless it exists. Returns True if created.

    An existing file is left as it is, except that its mode is tightened to 600 (and its owner
    set when uid/gid are given), so a copy restored from a backup cannot stay world-readable.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    created = False
    if not target.exists() or target.stat().st_size == 0:
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(_random.token_hex(nbytes))
        os.replace(tmp, target)
        created = True
    os.chmod(target, 0o600)
    if uid is not None or gid is not None:
        os.chown(target, -1 if uid is None else uid, -1 if gid is None else gid)
    return created
