"""The model ConfigMaps the workloads reference, watched: an edit re-plans the workloads that use
it; a deletion (or an edit that breaks it) keeps their placement and children and sets
``Degraded`` (``intake.reconcile_workload`` decides; this module only notices and re-runs it).

Only referenced ConfigMaps matter: the Kopf handler (``handlers.configmap_event``) sees every
ConfigMap event of the watched namespaces and drops the others at once — no body is kept, no index
holds them. :class:`ConfigMapRefs` remembers, per workload, the ConfigMap and key it reads and
what the intake last read there (the content's hash, or None when missing), so an event that
changes nothing the workload reads (a label, another key) costs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import kopf

if TYPE_CHECKING:
    from hetsched.operator.settings import OperatorContext

Key = tuple[str, str]
log = logging.getLogger("hetsched.configmaps")


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Seen:
    """What the intake last saw of a workload: enough to run it again without its body."""

    uid: str
    generation: int
    created: str
    spec: Mapping[str, Any]


@dataclass
class ConfigMapRefs:
    by_key: dict[Key, tuple[str, str, str]] = field(default_factory=dict)  # → (namespace, name, data key)
    readers: dict[tuple[str, str], set[Key]] = field(default_factory=dict)  # (namespace, name) → keys
    read: dict[Key, str | None] = field(default_factory=dict)  # what the intake last read
    workloads: dict[Key, Seen] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def track(self, key: Key, ref: tuple[str, str, str] | None) -> None:
        old = self.by_key.pop(key, None)
        if old is not None:
            readers = self.readers.get(old[:2])
            if readers is not None:
                readers.discard(key)
                if not readers:
                    del self.readers[old[:2]]
        if ref is not None:
            self.by_key[key] = ref
            self.readers.setdefault(ref[:2], set()).add(key)

    def saw(self, key: Key, text: str | None) -> None:
        self.read[key] = None if text is None else content_hash(text)

    def forget(self, key: Key) -> None:
        self.track(key, None)
        self.read.pop(key, None)
        self.workloads.pop(key, None)

    def changed(self, namespace: str, name: str, data: Mapping[str, Any] | None) -> list[Key]:
        """The workloads for which ConfigMap ``namespace/name`` (``data``; None: deleted) now
        holds something other than what their intake last read."""
        out = []
        for key in sorted(self.readers.get((namespace, name), ())):
            ref = self.by_key[key]
            value = None if data is None else data.get(ref[2])
            now = content_hash(value) if isinstance(value, str) else None
            if key not in self.read or self.read[key] != now:
                out.append(key)
        return out


def on_configmap_event(op: OperatorContext, type_: str | None, namespace: str, name: str, data: Any) -> None:
    """A ConfigMap event: re-run the intake of each workload whose model config it changed."""
    refs = op.configmaps
    if (namespace, name) not in refs.readers:
        return
    keys = refs.changed(namespace, name, None if type_ == "DELETED" else (data or {}))
    for key in keys:
        seen = refs.workloads.get(key)
        if seen is None:
            continue
        what = "deleted" if type_ == "DELETED" else "changed"
        log.info("ConfigMap %s/%s %s: re-reading the model config of %s/%s", namespace, name, what, *key)
        refs.read.pop(key, None)  # until the intake has read it again
        task = asyncio.create_task(_reintake(op, key, seen), name=f"hetsched configmap {key[0]}/{key[1]}")
        refs.tasks.add(task)
        task.add_done_callback(refs.tasks.discard)


async def _reintake(op: OperatorContext, key: Key, seen: Seen) -> None:
    from hetsched.operator.planning.intake import reconcile_workload

    meta = {"generation": seen.generation, "creationTimestamp": seen.created}
    try:
        await reconcile_workload(op, key[0], key[1], seen.uid, meta, seen.spec, None)
    except (kopf.PermanentError, kopf.TemporaryError) as exc:
        log.debug("%s/%s after its ConfigMap changed: %s", key[0], key[1], exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s/%s: re-reading its model config failed", *key)
