"""The few Kubernetes API calls the reconciler makes (kubernetes_asyncio), behind a small class that
tests replace with a fake.

Children are written with server-side apply (field manager ``hetsched``, forced: the operator owns
the fields it sets), generically for every kind in :data:`CHILD_KINDS`, and never onto an object
that is not theirs: a create carries a precondition that fails when the object exists, an update
the uid of the child it updates (``uid mismatch`` when the name now belongs to another object).
Apply bodies are ASCII JSON whose escapes YAML reads (:func:`apply_body`: the API server parses an
apply patch as YAML, which refuses JSON's surrogate-pair escapes of characters beyond U+FFFF). The
status is written with a JSON merge patch on the ``status`` subresource. A request the API server
answers with an error raises :class:`ApiError` (its Status message; ``refused`` tells a refusal,
which the same request would meet again, from a failure to serve it).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hetsched.scheduler.spec import API_GROUP, API_VERSION
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

FIELD_MANAGER = "hetsched"
# The apply media type, with a parameter: kubernetes_asyncio would JSON-encode the body again for the
# bare type; the API server reads the type and ignores the charset.
APPLY = "application/apply-patch+yaml; charset=utf-8"
MERGE = "application/merge-patch+json"
JSON = "application/json"
# A create is an apply that must not find the object: with a resourceVersion in the body the API
# server applies only to the object at that version (409 Conflict otherwise), and creates the object
# when there is none. No object is at version 1 (etcd's first revision is the cluster's first write).
CREATE_ONLY_VERSION = "1"


class ApiError(Exception):
    """The API server answered with an error: HTTP ``status``, its ``reason`` and ``message``."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def refused(self) -> bool:
        """The API server refused the request itself (invalid, forbidden, conflicting, too large):
        the same request would be refused again. 5xx, 408 and 429 are failures to serve it."""
        return 400 <= self.status < 500 and self.status not in (408, 429)

    @staticmethod
    def from_body(status: int, body: bytes) -> ApiError:
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            return ApiError(status, "", body[:1024].decode(errors="replace"))
        return ApiError(status, str(doc.get("reason") or ""), str(doc.get("message") or ""))


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def apply_body(obj: Mapping[str, Any]) -> bytes:
    """``obj`` as the body of an apply patch: JSON (a subset of YAML) in ASCII, every other character
    written as a YAML escape (``\\u00e9``, ``\\U0001f600``), so that any string the API server stores
    (controls, U+2028, emoji) arrives as it is."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return re.sub(r"[^\x20-\x7e]", _escape, text).encode("ascii")


#: The kinds of child the operator writes: kind → (API path prefix, plural).
CHILD_KINDS: dict[str, tuple[str, str]] = {
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "InferencePool": ("/apis/inference.networking.k8s.io/v1", "inferencepools"),
}


def child_path(kind: str, namespace: str, name: str) -> str:
    """The REST path of a namespaced child object; ValueError for a kind we do not write."""
    try:
        prefix, plural = CHILD_KINDS[kind]
    except KeyError:
        raise ValueError(f"cannot write kind {kind} (known: {', '.join(sorted(CHILD_KINDS))})") from None
    return f"{prefix}/namespaces/{namespace}/{plural}/{name}"


class KubeApi:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    async def from_kubeconfig(cls, path: str | None = None) -> KubeApi:
        """Client from ``path``, ``$KUBECONFIG`` or the in-cluster service account."""
        configuration = client.Configuration()
        kubeconfig = path or os.environ.get("KUBECONFIG")
        if kubeconfig or Path("~/.kube/config").expanduser().exists():  # noqa: ASYNC240 (startup only)
            await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self.api_client.close()

    # ---- generic requests ----------------------------------------------------------------------
    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = JSON,
    ) -> dict[str, Any]:
        """One request, raw JSON in and out (ApiError when the answer is not 2xx)."""
        response = await self.api_client.call_api(
            path,
            method,
            query_params=query or [],
            header_params={"Accept": JSON, "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        async with response:
            data = await response.read()
            if not 200 <= response.status <= 299:
                raise ApiError.from_body(response.status, data)
        doc: dict[str, Any] = json.loads(data) if data else {}
        return doc

    @staticmethod
    def _path(kind: str, namespace: str, name: str) -> str:
        return child_path(kind, namespace, name)

    async def apply(self, obj: Mapping[str, Any], *, create: bool = False, uid: str = "") -> dict[str, Any]:
        """Server-side apply of ``obj`` (forced); returns the object the API server stored.

        ``create``: only if no object of that name exists; ``uid``: only onto that object. Either
        way a 409 Conflict instead of writing onto an object that is not the one meant.
        """
        meta = obj["metadata"]
        body = copy.deepcopy(dict(obj))
        if create:
            body["metadata"]["resourceVersion"] = CREATE_ONLY_VERSION
        elif uid:
            body["metadata"]["uid"] = uid
        try:
            return await self._request(
                "PATCH",
                self._path(str(obj["kind"]), meta["namespace"], meta["name"]),
                query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
                body=apply_body(body),
                content_type=APPLY,
            )
        except ApiError as exc:
            # Another object now has the name: the API server calls the changed uid invalid (422).
            if uid and exc.status == 422 and "metadata.uid" in exc.message:
                raise ApiError(
                    409, "Conflict", f"{obj['kind']} {meta['name']} is not the object {uid} any more"
                ) from None
            raise

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the API server holds it (None: there is none)."""
        try:
            return await self._request("GET", self._path(kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, kind: str, namespace: str, name: str, *, uid: str = "") -> None:
        """Delete the object (its dependents in the background); only the object with ``uid`` if
        given. Gone already, or not that object any more: nothing to do."""
        options: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid:
            options["preconditions"] = {"uid": uid}
        try:
            await self._request("DELETE", self._path(kind, namespace, name), body=options)
        except ApiError as exc:
            if exc.status == 404 or (uid and exc.status == 409):
                return
            raise

    async def serves(self, group_version: str, plural: str) -> bool:
        """Whether the API server serves ``plural`` in ``group_version`` (a CRD installed and
        established). API discovery, which every authenticated user may read: no RBAC needed."""
        try:
            doc = await self._request("GET", f"/apis/{group_version}")
        except ApiError as exc:
            if exc.status in (403, 404):
                return False
            raise
        resources = doc.get("resources") or []
        return any(r.get("name") == plural for r in resources)

    async def patch_workload_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self._request(
            "PATCH",
            f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/agentworkloads/{name}/status",
            body={"status": dict(status)},
            content_type=MERGE,
        )

    async def post_event(self, ref: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about ``ref`` (what ``kubectl describe`` shows)."""
        meta = ref["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": ref["apiVersion"],
                "kind": ref["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid", ""),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": socket.gethostname()[:128],
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.core.create_namespaced_event(meta["namespace"], body)  # type: ignore[arg-type]

    async def list_nodes(
        self, page_size: int = 500
    ) -> list[tuple[str, dict[str, str], dict[str, Any], dict[str, Any]]]:
        """(name, labels, spec, status) of every Node, as plain dicts (camelCase keys).

        Raw JSON, in pages of ``page_size``: turning 2,000 nodes into model objects (every timestamp parsed by
        dateutil) cost seconds of CPU per list, taken from Kopf's indexing at start-up.
        """
        out = []
        cont: str | None = None
        while True:
            paging: dict[str, Any] = {"_continue": cont} if cont else {}
            page = await read_json(
                await self.core.list_node(limit=page_size, _preload_content=False, **paging)
            )
            for node in page.get("items") or []:
                meta = node.get("metadata") or {}
                out.append(
                    (
                        str(meta.get("name")),
                        dict(meta.get("labels") or {}),
                        node.get("spec") or {},
                        node.get("status") or {},
                    )
                )
            cont = (page.get("metadata") or {}).get("continue")
            if not cont:
                return out

    async def list_profiles(self) -> dict[str, dict[str, Any]]:
        """AcceleratorProfile specs by name ({} when the CRD is not installed)."""
        try:
            doc = await self.custom.list_cluster_custom_object(API_GROUP, API_VERSION, "acceleratorprofiles")
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise
        return {str(i["metadata"]["name"]): dict(i.get("spec") or {}) for i in doc.get("items", [])}

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods matching a label selector in one namespace, as plain dicts (camelCase keys).

        Raw JSON (no model objects): the caller reads a few fields of each pod. Only called for a
        child Deployment that has been stuck for the unschedulable grace period.
        """
        response = await self.core.list_namespaced_pod(
            namespace, label_selector=selector, _preload_content=False
        )
        return list((await read_json(response)).get("items") or [])

    async def crd_installed(self, name: str) -> bool:
        """Whether CustomResourceDefinition ``name`` exists and is not being deleted (a list by
        name: the role may list CRDs, not get them)."""
        crds = client.ApiextensionsV1Api(self.api_client)
        listed = await crds.list_custom_resource_definition(field_selector=f"metadata.name={name}")
        return any(i.metadata is not None and i.metadata.deletion_timestamp is None for i in listed.items)

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            cm = await self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(cm.data or {})


async def read_json(response: Any) -> dict[str, Any]:
    """The body of a ``_preload_content=False`` call: an aiohttp response, whose errors are not
    raised for us."""
    async with response:
        body = await response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=body[:300].decode(errors="replace"))
    doc: dict[str, Any] = json.loads(body)
    return doc
