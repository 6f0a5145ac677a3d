"""Checking manifests against the Kubernetes OpenAPI schemas, offline.

Built-in kinds are checked against the JSON schemas that ``kubernetes-validate`` bundles
(generated from the Kubernetes OpenAPI document of each release), in their *strict* form:
unknown fields are errors, not silently dropped as the API server and the Python client's
models would drop them. KubeRay's RayCluster and RayJob are checked against ``crds.py``, whose
pod templates point back into the same bundled definitions.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

import jsonschema
from referencing import Registry, Resource

from services.kube.crds import SCHEMAS as CRD_SCHEMAS

# The Kubernetes release whose schemas manifests are checked against; KubeRay v1 needs >= 1.23.
KUBERNETES_VERSION = "1.32"


class ManifestError(ValueError):
    """A manifest that the API server would refuse, or that would silently lose fields."""


def _schema_dir(version: str) -> Any:
    folder = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}.0-local-strict"
    if not folder.is_dir():
        raise ManifestError(f"no bundled Kubernetes schemas for version {version}")
    return folder


@cache
def _registry(version: str) -> Registry:
    definitions = json.loads((_schema_dir(version) / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


@cache
def _schema(version: str, api_version: str, kind: str) -> dict:
    if (api_version, kind) in CRD_SCHEMAS:
        return CRD_SCHEMAS[(api_version, kind)]
    # The bundled files are named kind-group-version.json ("deployment-apps-v1.json"), with the
    # group cut to its first label ("rbac.authorization.k8s.io/v1" -> "rbac-v1").
    group, _, ver = api_version.rpartition("/")
    stem = f"{kind.lower()}-{group.split('.')[0]}-{ver}" if group else f"{kind.lower()}-{ver}"
    path = _schema_dir(version) / f"{stem}.json"
    if not path.is_file():
        raise ManifestError(f"no schema for {kind} {api_version} in Kubernetes {version}")
    return json.loads(path.read_text())


def validate_manifest(manifest: dict, *, version: str = KUBERNETES_VERSION) -> None:
    """Raise ManifestError naming the object and the field path if ``manifest`` is invalid."""
    if not isinstance(manifest, dict):
        raise ManifestError(f"a manifest is a mapping, not {type(manifest).__name__}")
    api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        raise ManifestError("a manifest needs string apiVersion and kind")
    name = (manifest.get("metadata") or {}).get("name")
    if not name:
        raise ManifestError(f"{kind} without metadata.name")
    validator = jsonschema.Draft202012Validator(
        _schema(version, api_version, kind), registry=_registry(version)
    )
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"  {'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message[:300]}"
            for e in errors[:10]
        ]
        raise ManifestError(f"{kind}/{name} is invalid:\n" + "\n".join(lines))


def validate_all(manifests: list[dict], *, version: str = KUBERNETES_VERSION) -> None:
    """Validate every manifest and refuse two objects of the same kind and name."""
    seen: set[tuple[str, str, str | None]] = set()
    for manifest in manifests:
        validate_manifest(manifest, version=version)
        meta = manifest["metadata"]
        key = (manifest["kind"], meta["name"], meta.get("namespace"))
        if key in seen:
            raise ManifestError(f"{key[0]}/{key[1]} is defined twice")
        seen.add(key)
