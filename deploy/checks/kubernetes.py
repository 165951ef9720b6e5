"""Validating rendered Kubernetes objects: the JSON schemas, then references between objects.

The schemas (kubernetes-validate, strict: unknown fields are errors) are checked for the
oldest Kubernetes release the manifests support and the newest the package knows, so an API
removed since, or not there yet, fails. The cross-checks are what no schema sees: selectors
and HPA targets find their workloads, probes name declared ports, ConfigMap and Secret keys
exist (the Secret from secret.example.yaml), and each container mounting the broker config
would start with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate

from checks.broker_settings import settings_problem, stand_in
from checks.kustomize import WORKLOAD_KINDS, Manifest, containers, pod_spec, render
from checks.problems import Problems, load_documents

OLDEST_KUBERNETES = "1.30"
KUSTOMIZATIONS = ("deploy/kubernetes", "deploy/kubernetes/migrate")
OUTSIDE_KUSTOMIZATION = ("deploy/kubernetes/secret.example.yaml",)

ByKind = dict[str, dict[str, Manifest]]
"""Rendered objects by kind, then by name."""


def check_kubernetes(root: Path, problems: Problems) -> int:
    """Check every kustomization; returns how many objects were checked."""
    images: dict[str, str] = {}
    extra: list[Manifest] = []
    for name in OUTSIDE_KUSTOMIZATION:
        try:
            extra += [Manifest(name, doc) for doc in load_documents(root / name)]
        except ValueError as exc:
            problems.add(name, str(exc))
    validate_schemas(extra, problems)
    count = len(extra)
    for directory in KUSTOMIZATIONS:
        manifests = render(root / directory, root, problems, images)
        validate_schemas(manifests, problems)
        cross_check(manifests, extra, problems)
        count += len(manifests)
    return count


def validate_schemas(manifests: list[Manifest], problems: Problems) -> None:
    newest = kubernetes_validate.latest_version()
    for manifest in manifests:
        if "namespace" in manifest.obj.get("metadata", {}):
            problems.add(manifest.source, f"{manifest.name}: no namespace: it is chosen at apply")
        for version in dict.fromkeys((OLDEST_KUBERNETES, newest)):
            try:
                kubernetes_validate.validate(manifest.obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(part) for part in exc.path) or "(top level)"
                problems.add(
                    manifest.source,
                    f"{manifest.name}: {path}: {exc.message} (Kubernetes {version})",
                )
                break
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.add(manifest.source, f"{manifest.name}: {exc.message}")
                break


def cross_check(manifests: list[Manifest], extra: list[Manifest], problems: Problems) -> None:
    """References between objects that no schema can see."""
    by_kind: ByKind = {}
    for manifest in manifests + extra:
        kind, name = str(manifest.obj.get("kind")), manifest.obj["metadata"]["name"]
        by_kind.setdefault(kind, {})[name] = manifest
    templates = [
        m.obj["spec"]["template"].get("metadata", {}).get("labels", {})
        for m in manifests
        if m.obj.get("kind") in WORKLOAD_KINDS
    ]
    for manifest in manifests:
        obj, spec = manifest.obj, manifest.obj.get("spec", {})
        selector = {
            "Service": spec.get("selector"),
            "PodDisruptionBudget": spec.get("selector", {}).get("matchLabels"),
            "NetworkPolicy": spec.get("podSelector", {}).get("matchLabels"),
            "Deployment": spec.get("selector", {}).get("matchLabels"),
        }.get(str(obj.get("kind")))
        if selector and not any(selector.items() <= labels.items() for labels in templates):
            problems.add(manifest.source, f"{manifest.name}: selector {selector} matches no pods")
        if obj.get("kind") == "HorizontalPodAutoscaler":
            target = spec.get("scaleTargetRef", {})
            if target.get("name") not in by_kind.get(str(target.get("kind")), {}):
                problems.add(manifest.source, f"{manifest.name}: scales {target} which is not here")
        if pod_spec(obj) is not None:
            _check_pod_references(manifest, by_kind, problems)


def _check_pod_references(manifest: Manifest, by_kind: ByKind, problems: Problems) -> None:
    def has_key(kind: str, name: str, key: str | None) -> bool:
        found = by_kind.get(kind, {}).get(name)
        if found is None:
            return False
        keys = set(found.obj.get("data", {})) | set(found.obj.get("stringData", {}))
        return key is None or key in keys

    pod = pod_spec(manifest.obj) or {}
    for volume in pod.get("volumes", []):
        config_map = volume.get("configMap")
        if config_map:
            for key in [item["key"] for item in config_map.get("items", [])] or [None]:
                if not has_key("ConfigMap", config_map["name"], key):
                    needs = f"ConfigMap {config_map['name']}" + (f" key {key}" if key else "")
                    problems.add(
                        manifest.source, f"{manifest.name}: volume {volume['name']} needs {needs}"
                    )
    for container in containers(manifest.obj):
        port_names = {port.get("name") for port in container.get("ports", [])}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = container.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in port_names:
                problems.add(manifest.source, f"{manifest.name}: {probe} names no port {port!r}")
        for env in container.get("env", []):
            for kind, ref in (
                ("Secret", env.get("valueFrom", {}).get("secretKeyRef")),
                ("ConfigMap", env.get("valueFrom", {}).get("configMapKeyRef")),
            ):
                if ref and not has_key(kind, ref["name"], ref["key"]):
                    needs = f"{kind} {ref['name']} key {ref['key']}"
                    problems.add(manifest.source, f"{manifest.name}: {env['name']} needs {needs}")
        _check_broker_config(manifest, container, pod, by_kind, problems)


def _check_broker_config(
    manifest: Manifest,
    container: dict[str, Any],
    pod: dict[str, Any],
    by_kind: ByKind,
    problems: Problems,
) -> None:
    """Load the settings as this container would, with stand-ins for the Secret's values."""
    env = {item["name"]: item for item in container.get("env", [])}
    config_path = env.get("BROKER_CONFIG", {}).get("value")
    if not config_path:
        return
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    text, origin = None, ""
    for mount in container.get("volumeMounts", []):
        config_map = volumes.get(mount["name"], {}).get("configMap")
        prefix = mount["mountPath"].rstrip("/") + "/"
        found = by_kind.get("ConfigMap", {}).get(config_map["name"]) if config_map else None
        if found and config_map and config_path.startswith(prefix):
            paths = {item["path"]: item["key"] for item in config_map.get("items", [])}
            key = config_path.removeprefix(prefix)
            key = paths.get(key, key if not paths else "")
            text = found.obj.get("data", {}).get(key)
            origin = f" ({found.source}, {found.name} key {key})"
    where = f"{manifest.source}: {manifest.name}: container {container['name']}"
    if text is None:
        problems.add(where, f"BROKER_CONFIG={config_path} is in no mounted ConfigMap")
        return
    environ = {
        name: str(item["value"]) if "value" in item else stand_in(name)
        for name, item in env.items()
    }
    problem = settings_problem(text, environ)
    if problem:
        problems.add(where, problem + origin)
