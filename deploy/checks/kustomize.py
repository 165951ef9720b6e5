"""Rendering a kustomization the way ``kubectl apply -k`` does, for the features it uses.

Supported: ``resources`` (files and directories), ``labels`` (without ``includeSelectors``)
and ``images``; any other key is reported, so a manifest change never passes unchecked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checks.problems import Problems, load_documents

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "labels", "images"}
WORKLOAD_KINDS = {"Deployment", "Job", "StatefulSet", "DaemonSet"}


@dataclass
class Manifest:
    """One rendered Kubernetes object and the file it came from."""

    source: str
    obj: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.obj.get('kind')}/{self.obj.get('metadata', {}).get('name')}"


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    """A workload's pod spec; None for anything that runs no pods."""
    if obj.get("kind") not in WORKLOAD_KINDS:
        return None
    spec: dict[str, Any] = obj.get("spec", {}).get("template", {}).get("spec", {})
    return spec


def containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    pod = pod_spec(obj) or {}
    yield from pod.get("initContainers", [])
    yield from pod.get("containers", [])


def render(
    directory: Path, root: Path, problems: Problems, images: dict[str, str]
) -> list[Manifest]:
    """The objects of the kustomization in ``directory``.

    ``images`` maps each image name to the reference some kustomization gave it; a second
    kustomization naming the same image differently is a problem (the migration Job must run
    the release being rolled out).
    """
    where = (directory / "kustomization.yaml").relative_to(root)
    try:
        (spec,) = load_documents(root / where)
    except ValueError as exc:
        problems.add(where, str(exc))
        return []
    for key in sorted(set(spec) - KUSTOMIZATION_KEYS):
        problems.add(where, f"{key!r} is not rendered by deploy/checks; extend it or avoid it")
    manifests: list[Manifest] = []
    for entry in spec.get("resources", []):
        target = Path(os.path.normpath(directory / str(entry)))
        if target.is_dir():
            manifests += render(target, root, problems, images)
        elif target.is_file():
            try:
                documents = load_documents(target)
            except ValueError as exc:
                problems.add(target.relative_to(root), str(exc))
                continue
            manifests += [Manifest(str(target.relative_to(root)), doc) for doc in documents]
        else:
            problems.add(where, f"resource {entry!r} does not exist")
    for label_set in spec.get("labels", []):
        if label_set.get("includeSelectors"):
            problems.add(where, "labels with includeSelectors are not rendered by deploy/checks")
        for manifest in manifests:
            _add_labels(manifest.obj, label_set.get("pairs", {}), label_set.get("includeTemplates"))
    for image in spec.get("images", []):
        reference = f"{image.get('newName', image['name'])}:{image.get('newTag', 'latest')}"
        if images.setdefault(image["name"], reference) != reference:
            elsewhere = images[image["name"]]
            problems.add(where, f"image {image['name']} is {reference}, elsewhere {elsewhere}")
        for manifest in manifests:
            for container in containers(manifest.obj):
                if container.get("image") == image["name"]:
                    container["image"] = reference
    return manifests


def _add_labels(obj: dict[str, Any], pairs: Mapping[str, str], templates: bool | None) -> None:
    obj.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    template = obj.get("spec", {}).get("template")
    if templates and isinstance(template, dict):
        template.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
