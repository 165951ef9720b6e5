"""``compose.yaml``: the Compose specification's JSON schema, then what the schema cannot see.

The schema is the one check-jsonschema vendors (with its license) from the compose-spec
project. After it: build files and bind-mount sources exist, each service that names a
broker config in BROKER_CONFIG would start with the file mounted there and its environment, and
the services meant to scale (``docker compose up --scale sync-worker=3``) take no fixed port.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema

from checks.broker_settings import settings_problem
from checks.problems import Problems, load_documents

COMPOSE_FILE = "compose.yaml"
# Services run as any number of replicas: they may publish no host port and, since they share
# a network namespace, listen on no fixed port either.
SCALED_SERVICES = ("sync-worker",)


def compose_schema() -> dict[str, Any]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text("utf-8"))
    return schema


def schema_problems(compose: dict[str, Any]) -> list[str]:
    """``path: message`` for each way the file breaks the specification."""
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(compose), key=lambda error: list(error.path))
    # A sub-schema that fails leaves its properties "unevaluated" one level up: report the
    # failure itself, not that echo.
    paths = [list(error.path) for error in errors if error.validator != "unevaluatedProperties"]
    errors = [
        error
        for error in errors
        if error.validator != "unevaluatedProperties"
        or not any(path[: len(error.path)] == list(error.path) for path in paths)
    ]
    return [
        f"{'.'.join(str(part) for part in error.path) or '(top level)'}: {error.message}"
        for error in errors
    ]


def check_compose(root: Path, problems: Problems) -> None:
    try:
        (compose,) = load_documents(root / COMPOSE_FILE)
    except ValueError as exc:
        problems.add(COMPOSE_FILE, str(exc))
        return
    found = schema_problems(compose)
    for problem in found:
        problems.add(COMPOSE_FILE, problem)
    if found:
        return
    for name, service in compose.get("services", {}).items():
        where = f"{COMPOSE_FILE}: services.{name}"
        _check_service(root, where, service, problems)
        if name in SCALED_SERVICES:
            for problem in scaling_problems(service):
                problems.add(where, problem)


def scaling_problems(service: dict[str, Any]) -> list[str]:
    """Why ``--scale`` would make replicas of this service collide on a port."""
    found = []
    if service.get("ports"):
        found.append("publishes host ports, which a second replica cannot take")
    command = [str(part) for part in service.get("command", [])]
    port = command[command.index("--http-port") + 1] if "--http-port" in command[:-1] else None
    if port is None:
        found.append("listens on the image's default port 8001: give --http-port 0 (or -1)")
    elif port not in ("0", "-1"):
        found.append(f"listens on the fixed port {port}: give --http-port 0 (or -1)")
    elif port == "0" and ("--http-port-file" not in command or "healthcheck" not in service):
        found.append(
            "--http-port 0 needs --http-port-file and a healthcheck that reads it (the image's "
            "HEALTHCHECK asks port 8001)"
        )
    return found


def _check_service(root: Path, where: str, service: dict[str, Any], problems: Problems) -> None:
    build = service.get("build", {})
    if isinstance(build, dict) and "dockerfile" in build:
        if not (root / build.get("context", ".") / build["dockerfile"]).is_file():
            problems.add(where, f"no Dockerfile {build['dockerfile']}")
    mounts = {
        volume["target"]: root / volume["source"]
        for volume in service.get("volumes", [])
        if isinstance(volume, dict) and volume.get("type") == "bind"
    }
    for source in mounts.values():
        if not source.exists():
            problems.add(where, f"bind mount source {source.relative_to(root)} is missing")
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    environ = {key: "" if value is None else str(value) for key, value in environment.items()}
    config = environ.get("BROKER_CONFIG")
    if config and config in mounts and mounts[config].is_file():
        problem = settings_problem(mounts[config].read_text("utf-8"), environ)
        if problem:
            origin = mounts[config].relative_to(root)
            problems.add(where, f"{problem} (config {origin})")
