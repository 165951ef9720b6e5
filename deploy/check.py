"""``make check-deploy``: validate the deployment files without a cluster or a Docker engine.

Kubernetes manifests (rendered kustomizations) against the Kubernetes JSON schemas and each
other, ``compose.yaml`` against the Compose specification, the Dockerfiles with hadolint, and
every broker config with the broker's own settings loader (see ``checks/``). Each problem is
printed as ``file: what is wrong``; the exit status is 1 if there was any.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from checks.compose import check_compose
from checks.dockerfiles import DOCKERFILES, check_dockerfiles
from checks.kubernetes import check_kubernetes
from checks.problems import Problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate deploy/, compose.yaml, Dockerfiles.")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the repository to check (default: this one)",
    )
    root = parser.parse_args(argv).root.resolve()
    problems = Problems()
    objects = check_kubernetes(root, problems)
    check_compose(root, problems)
    check_dockerfiles(root, problems)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check-deploy: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    checked = f"{objects} Kubernetes objects, compose.yaml, {len(DOCKERFILES)} Dockerfiles"
    print(f"check-deploy: ok ({checked})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
