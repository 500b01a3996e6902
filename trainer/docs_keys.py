"""Print the config reference table of docs/trainer.md from TrainConfig's field docstrings.

    python -m trainer.docs_keys > /tmp/keys.md

The table in docs/trainer.md is generated with this, so keys, defaults and meanings cannot drift
from the code (tests/test_trainer.py checks every key appears in the doc).
"""

from __future__ import annotations

import ast
import functools
import dataclasses
import inspect

from .config import TrainConfig


@functools.lru_cache(maxsize=1)
def field_docs() -> dict[str, str]:
    """Docstring under each field of TrainConfig, by field name."""
    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def table() -> str:
    docs = field_docs()
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        shown = "null" if default is None else ("true" if default is True else "false" if default is False else default)
        rows.append(f"| `{f.name}` | `{shown}` | {docs.get(f.name, '').replace('|', '/')} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
