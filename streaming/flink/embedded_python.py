"""The import path for PyFlink's thread mode, where the Python runs inside a JVM.

That interpreter starts from the bare Python: it reads no virtual environment's site-packages (nor the .pth files
there, through which a venv may add more). PyFlink hands it the PYTHONPATH its JVM was started with, so a JVM this
machine starts for the job (the local MiniCluster, the local standalone TaskManager) is given this process's import
path: the repo, the venv, what its .pth files added. (The Flink image installs the dispatcher into the system Python,
where the embedded interpreter finds it without this.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# sitecustomize.py there keeps pyarrow out of the JVM (it says why); first, so that it is the one Python imports
EMBEDDED_SITE = Path(__file__).resolve().parent / "embedded"


def python_path() -> str:
    """EMBEDDED_SITE, this process's import path, then any PYTHONPATH it was given."""
    paths = [
        str(EMBEDDED_SITE),
        *(p for p in sys.path if p and Path(p).is_dir()),
        *os.environ.get("PYTHONPATH", "").split(os.pathsep),
    ]
    return os.pathsep.join(p for p in dict.fromkeys(paths) if p)
