"""The few Kubernetes API calls the reconciler makes (kubernetes_asyncio), behind a small class that
tests replace with a fake.

Children are written with server-side apply (field manager ``hetsched``, forced: the operator owns
these objects); status with a JSON merge patch on the ``status`` subresource.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hetsched.scheduler.spec import API_GROUP, API_VERSION
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

FIELD_MANAGER = "hetsched"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"

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

    async def apply(self, obj: Mapping[str, Any]) -> None:
        """Server-side apply of a child (any kind of :data:`CHILD_KINDS`)."""
        meta = obj["metadata"]
        path = child_path(str(obj["kind"]), meta["namespace"], meta["name"])
        await self.api_client.call_api(
            path,
            "PATCH",
            query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            header_params={"Content-Type": APPLY, "Accept": "application/json"},
            body=json.loads(json.dumps(obj)),
            response_types_map={200: "object", 201: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
        )

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete a child (its dependents in the background); gone already is fine."""
        try:
            await self.api_client.call_api(
                child_path(kind, namespace, name),
                "DELETE",
                header_params={"Content-Type": "application/json", "Accept": "application/json"},
                body={"propagationPolicy": "Background"},
                response_types_map={200: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def serves(self, group_version: str, plural: str) -> bool:
        """Whether the API server serves ``plural`` in ``group_version`` (a CRD installed and
        established). API discovery, which every authenticated user may read: no RBAC needed."""
        try:
            doc = await self.api_client.call_api(
                f"/apis/{group_version}",
                "GET",
                header_params={"Accept": "application/json"},
                response_types_map={200: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except ApiException as exc:
            if exc.status in (403, 404):
                return False
            raise
        resources = (doc or {}).get("resources") or [] if isinstance(doc, dict) else []
        return any(r.get("name") == plural for r in resources)

    async def patch_workload_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        await self.custom.patch_namespaced_custom_object_status(
            API_GROUP,
            API_VERSION,
            namespace,
            "agentworkloads",
            name,
            {"status": dict(status)},
            _content_type=MERGE,  # type: ignore[call-arg]
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
            page = await _json(await self.core.list_node(limit=page_size, _preload_content=False, **paging))
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
        return list((await _json(response)).get("items") or [])

    async def read_configmap(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            cm = await self.core.read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(cm.data or {})


async def _json(response: Any) -> dict[str, Any]:
    """The body of a ``_preload_content=False`` call: an aiohttp response, whose errors are not
    raised for us."""
    async with response:
        body = await response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=body[:300].decode(errors="replace"))
    doc: dict[str, Any] = json.loads(body)
    return doc
