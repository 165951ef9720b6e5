"""What a check found wrong, and reading the YAML files it checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class Problems(list[str]):
    """What is wrong, one ``file: message`` line each."""

    def add(self, where: str | Path, message: str) -> None:
        self.append(f"{where}: {message}")


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of a file; raises ValueError saying what is wrong."""
    try:
        documents = [doc for doc in yaml.safe_load_all(path.read_text("utf-8")) if doc]
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ValueError(f"not valid YAML: {exc.problem}{at}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    for doc in documents:
        if not isinstance(doc, dict):
            raise ValueError("every YAML document must be a mapping")
    return documents
