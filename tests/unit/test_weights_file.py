"""Weights files are readable by the containers that mount them (the service runs as a user of its own)."""

from __future__ import annotations

import os
import stat

from adapters.fruit_defect.train import _save_atomically


def test_saved_weights_are_readable_by_other_users_as_the_umask_allows(tmp_path):
    previous = os.umask(0o022)
    try:
        dest = tmp_path / "model.ts"
        _save_atomically(lambda tmp: tmp.write_bytes(b"weights"), dest)
    finally:
        os.umask(previous)
    mode = stat.S_IMODE(dest.stat().st_mode)
    assert mode == 0o644, oct(mode)  # mkstemp's 0600 made the compose service fail with "Permission denied"
