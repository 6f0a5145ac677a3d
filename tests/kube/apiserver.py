"""A stand-in Kubernetes API server for tests: no real API server can run on this machine.

It answers, over real HTTP on 127.0.0.1, the API paths the Kubernetes backend uses, so the
official ``kubernetes`` client is exercised end to end (URLs, verbs, content types, bodies,
error statuses):

    /apis/apps/v1/namespaces/{ns}/deployments[/{name}]
    /api/v1/namespaces/{ns}/services[/{name}]
    /apis/ray.io/v1/namespaces/{ns}/rayjobs[/{name}[/status]]

What it does as the real server does: objects kept by namespace and name; POST answers 409
AlreadyExists for a taken name and 404 for an unknown namespace; GET and PATCH of a missing
object answer 404; lists filter by equality label selectors; PATCH applies JSON patch
(RFC 6902), merge patch (RFC 7386) and strategic-merge patch (containers, env, volumes ...
merged by their keys; refused with 415 for custom resources, as the real server does); an
unchanged object keeps its resourceVersion; ``metadata.generation`` moves only when the spec
changes; status is written only through ``/status``; a Deployment's selector is immutable.
Every written object is validated against the strict schemas (422 Invalid otherwise); the
real server is laxer and drops unknown fields.

What it does not do: no controllers (``settle`` plays the Deployment controller, a test
writes a RayJob's status as the KubeRay operator would), no defaulting, no admission,
authentication, watches or server-side apply.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jsonpatch

from services.kube.validation import ManifestError, validate_manifest

# (path prefix, plural) -> (apiVersion, kind, is a custom resource)
RESOURCES = {
    ("apis/apps/v1", "deployments"): ("apps/v1", "Deployment", False),
    ("api/v1", "services"): ("v1", "Service", False),
    ("apis/ray.io/v1", "rayjobs"): ("ray.io/v1", "RayJob", True),
}
PATH = re.compile(
    r"^/(?P<prefix>api/v1|apis/[^/]+/[^/]+)/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)"
    r"(?:/(?P<name>[^/]+))?(?:/(?P<sub>status))?/?$"
)
# Strategic merge: list fields merged by key instead of replaced (Kubernetes' patchMergeKey).
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}
PORT_MERGE_KEY = {"Deployment": "containerPort", "Service": "port"}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target, patch, kind: str, field: str | None = None):
    """The subset of Kubernetes' strategic merge patch that built-in workloads need."""
    if isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            raise ApiError(422, "Invalid", f"unsupported patch directive in {sorted(patch)}")
        result = dict(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge(result.get(key), value, kind, key)
        return result
    if isinstance(patch, list):
        key = PORT_MERGE_KEY[kind] if field == "ports" else MERGE_KEYS.get(field or "")
        if key is None or not isinstance(target, list):
            return copy.deepcopy(patch)
        result = [copy.deepcopy(item) for item in target]
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                raise ApiError(422, "Invalid", f"{field}: every element needs its merge key {key}")
            at = next((i for i, old in enumerate(result) if old.get(key) == item[key]), None)
            if at is None:
                result.append(copy.deepcopy(item))
            else:
                result[at] = strategic_merge(result[at], item, kind)
        return result
    return copy.deepcopy(patch)


def matches(labels: dict, selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = re.split("==?", term, maxsplit=1)
            if labels.get(key) != value:
                return False
        elif re.fullmatch(r"[\w./-]+", term):
            if term not in labels:
                return False
        else:
            raise ApiError(400, "BadRequest", f"unsupported label selector {term!r}")
    return True


class FakeApiServer:
    def __init__(self, namespaces: tuple[str, ...] = ("flywheel",)) -> None:
        self.namespaces = set(namespaces)
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self._version = 0
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"api": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> FakeApiServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- what a test reaches for directly -------------------------------------------------

    def get(self, plural: str, namespace: str, name: str) -> dict:
        return copy.deepcopy(self.objects[(plural, namespace, name)])

    def settle(self, namespace: str, name: str, *, available: int | None = None) -> None:
        """Play the Deployment controller: the current template is rolled out."""
        with self._lock:
            obj = self.objects[("deployments", namespace, name)]
            replicas = obj["spec"].get("replicas", 1)
            ready = replicas if available is None else available
            obj["status"] = {
                "observedGeneration": obj["metadata"]["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": ready,
                "availableReplicas": ready,
            }
            obj["metadata"]["resourceVersion"] = self._next_version()

    # -- the API ----------------------------------------------------------------------------

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    def handle(self, method: str, url: str, content_type: str | None, body: bytes):
        parsed = urlparse(url)
        self.requests.append((method, parsed.path, content_type))
        found = PATH.match(parsed.path)
        if not found:
            raise ApiError(404, "NotFound", f"the server could not find {parsed.path}")
        resource = RESOURCES.get((found["prefix"], found["plural"]))
        if resource is None:
            raise ApiError(404, "NotFound", f"the server could not find {parsed.path}")
        api_version, kind, custom = resource
        ns, plural, name, sub = found["ns"], found["plural"], found["name"], found["sub"]
        with self._lock:
            if ns not in self.namespaces:
                raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')
            key = (plural, ns, name)
            if method == "GET" and name is None:
                selector = parse_qs(parsed.query).get("labelSelector", [""])[0]
                items = [
                    copy.deepcopy(o)
                    for (p, n, _), o in sorted(self.objects.items())
                    if p == plural
                    and n == ns
                    and matches(o["metadata"].get("labels") or {}, selector)
                ]
                return 200, {
                    "apiVersion": api_version,
                    "kind": f"{kind}List",
                    "metadata": {"resourceVersion": str(self._version)},
                    "items": items,
                }
            if method == "POST" and name is None and sub is None:
                return 201, self._create(plural, ns, api_version, kind, _json(body))
            if name is None:
                raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on a list")
            if key not in self.objects:
                raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
            if method == "GET":
                return 200, copy.deepcopy(self.objects[key])
            if method == "PATCH":
                return 200, self._patch(key, kind, custom, sub, content_type, _json(body))
            if method == "DELETE" and sub is None:
                del self.objects[key]
                return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        raise ApiError(405, "MethodNotAllowed", f"{method} {parsed.path}")

    def _create(self, plural: str, ns: str, api_version: str, kind: str, obj) -> dict:
        if (
            not isinstance(obj, dict)
            or obj.get("apiVersion") != api_version
            or obj.get("kind") != kind
        ):
            raise ApiError(400, "BadRequest", f"expected a {kind} of {api_version}")
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise ApiError(422, "Invalid", f"{kind}: metadata.name: Required value")
        if meta.setdefault("namespace", ns) != ns:
            raise ApiError(
                400, "BadRequest", "the namespace of the object does not match the request"
            )
        if (plural, ns, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists')
        obj.pop("status", None)
        self._validate(obj)
        meta.update(
            uid=str(uuid.uuid4()),
            generation=1,
            resourceVersion=self._next_version(),
            creationTimestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        self.objects[(plural, ns, name)] = obj
        return copy.deepcopy(obj)

    def _patch(self, key, kind: str, custom: bool, sub, content_type, patch) -> dict:
        old = self.objects[key]
        if content_type == "application/json-patch+json":
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "a JSON patch is a list of operations")
            try:
                new = jsonpatch.apply_patch(old, patch)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise ApiError(422, "Invalid", f"JSON patch failed: {exc}") from exc
        elif content_type == "application/merge-patch+json":
            new = merge_patch(old, patch)
        elif content_type == "application/strategic-merge-patch+json":
            if custom:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "strategic merge patch is not supported for custom resources",
                )
            new = strategic_merge(old, patch, kind)
        else:
            raise ApiError(415, "UnsupportedMediaType", f"unsupported patch type {content_type}")
        if sub == "status":
            # /status changes status only; the main resource ignores status.
            new = {**copy.deepcopy(old), "status": new.get("status")}
        else:
            new["status"] = copy.deepcopy(old.get("status"))
        if new.get("status") is None:
            new.pop("status", None)
        for field in ("name", "namespace", "uid"):
            if new.get("metadata", {}).get(field) != old["metadata"].get(field):
                raise ApiError(422, "Invalid", f"metadata.{field}: field is immutable")
        if kind == "Deployment" and new["spec"].get("selector") != old["spec"].get("selector"):
            raise ApiError(422, "Invalid", "spec.selector: field is immutable")
        if new == old:
            return copy.deepcopy(old)
        self._validate({k: v for k, v in new.items() if k != "status"})
        if new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        new["metadata"]["resourceVersion"] = self._next_version()
        self.objects[key] = new
        return copy.deepcopy(new)

    @staticmethod
    def _validate(obj: dict) -> None:
        server_fields = ("uid", "generation", "resourceVersion", "creationTimestamp")
        meta = {k: v for k, v in obj["metadata"].items() if k not in server_fields}
        try:
            validate_manifest({**obj, "metadata": meta})
        except ManifestError as exc:
            raise ApiError(422, "Invalid", str(exc)) from exc


def _json(body: bytes):
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise ApiError(400, "BadRequest", f"body is not JSON: {exc}") from exc


class _Handler(BaseHTTPRequestHandler):
    api: FakeApiServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this, Nagle and delayed ACKs add 40 ms.
    disable_nagle_algorithm = True

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        content_type = (self.headers.get("Content-Type") or "").split(";")[0] or None
        try:
            code, payload = self.api.handle(self.command, self.path, content_type, body)
        except ApiError as exc:
            code, payload = exc.code, exc.status()
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = _serve

    def log_message(self, format, *args) -> None:  # keep test output clean
        pass
