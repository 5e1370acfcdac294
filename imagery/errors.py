"""The tooling's one error root, as httpx's `_exceptions.py` has one: every error class of the `imagery` package
derives from `ToolError`, and the CLI ends any of them with one line, `error: <message>`, and status 1.

A class keeps a builtin base beside it where callers catch it by that (`ValueError` for a spec that cannot be read,
`LookupError` for a thing that is not there, `TimeoutError` for a wait that ran out, `RuntimeError` for a Kafka call
that failed, as tests/secured catches a refusal).
tests/unit/test_tool_errors.py walks every module of the package to hold it so.
"""

from __future__ import annotations


class ToolError(Exception):
    """Something the tooling was asked to do cannot be done as asked; the message says what, and what to look at."""
