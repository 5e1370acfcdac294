"""Imported at the start of the Python that runs inside a Flink JVM (thread mode), which finds it first on the
PYTHONPATH that streaming/flink/embedded_python.py (and the Flink image) give that JVM: it keeps pyarrow, and the
libarrow it loads, out of the JVM.

PyFlink's embedded bootstrap imports pandas (through apache_beam's type hints), and pandas imports pyarrow.compute
when pyarrow is installed, which walks libarrow's function registry. In thread mode a TaskManager JVM died there,
SIGSEGV in `arrow::compute::FunctionRegistry::FunctionRegistryImpl::GetFunction`, once in 34 job starts
(tests/faults/test_operator_actions.py, "two jobs of one team, started and stopped"; the frame of issue 28's report).
The dispatcher uses no Arrow, and pandas and PyFlink import pyarrow only to convert to or from it (pandas goes on
without it), so the import is refused.
"""

from __future__ import annotations

import sys
from importlib.machinery import ModuleSpec


class _NoArrow:
    """A meta path finder that refuses pyarrow and its submodules."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> ModuleSpec | None:
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ModuleNotFoundError(
                f"{name} is kept out of the JVM (streaming/flink/embedded/sitecustomize.py)", name=name
            )
        return None


sys.meta_path.insert(0, _NoArrow())
