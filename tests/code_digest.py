"""The digest of a function's code, for tests that pin code storage_guard mirrors or replaces.

The code as ``ast.unparse`` writes it (no comments, no docstring, one layout), which is the same
on Python 3.11 to 3.13. (``ast.dump`` is not: 3.13 leaves out empty fields.)
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import textwrap


def digest_without_docstring(source: str) -> str:
    function = ast.parse(textwrap.dedent(source)).body[0]
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    function.body = body
    return hashlib.sha256(ast.unparse(function).encode()).hexdigest()


def code_digest(function) -> str:
    """``digest_without_docstring`` of ``function``'s source."""
    return digest_without_docstring(inspect.getsource(function))
