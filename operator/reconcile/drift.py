"""Drift: whether a child as the API server holds it still has every field the operator sets.

The operator owns the fields of its manifests (server-side apply, field manager ``hetsched``), and
only those: the API server adds defaults (``clusterIP``, ``restartPolicy``, ...), controllers add
annotations (``deployment.kubernetes.io/revision``, ``kubectl.kubernetes.io/restartedAt``), other
field managers may add entries to lists and maps that server-side apply merges by key. None of that
is drift. Drift is a field we set whose value is not ours any more (``kubectl scale``, ``kubectl set
image``, an edited selector) or an entry we set that is gone.

:func:`drift` compares the desired manifest against the live object the way a forced apply of the
manifest would change it, so that a child without drift is never written (a resync of a quiet cluster
writes nothing) and a child with drift is written once:

* maps: every key we set must be there with our value; other keys are someone else's, except in
  the atomic maps (selectors), which an apply replaces whole;
* lists of objects merged by key (containers by ``name``, ports by port and protocol, owner
  references by ``uid``, ...): each entry we set must be there, matched by its key; other entries
  are someone else's; every other list (``args``, ``tolerations``, ...) is atomic: equal length,
  equal entries;
* scalars: equal; a field we set to an empty value (``""``, ``0``, ``false``, ``[]``, ``{}``) may be
  absent (the API server omits empty values); quantities under ``resources`` compare by value (the
  API server stores ``1000m`` as ``1``, ``0.5Gi`` as ``512Mi``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hetsched.scheduler.units import kube_quantity

# Maps that server-side apply treats as one value (``+mapType=atomic``): an extra key is drift.
ATOMIC_MAPS = frozenset({"selector", "nodeSelector", "matchLabels"})
# Lists of objects merged by key (``+listType=map``), by field name: the key fields (those an entry
# we set carries are the ones compared).
LIST_MAP_KEYS: Mapping[str, tuple[str, ...]] = {
    "ownerReferences": ("uid",),
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "imagePullSecrets": ("name",),
    "ports": ("containerPort", "port", "protocol"),
}


def _empty(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == "" or value == [] or value == {}


def _field(path: str) -> str:
    return path.rsplit(".", 1)[-1].split("[", 1)[0]


def drift(live: Any, want: Any, path: str = "") -> str | None:
    """The path of the first field of ``want`` that ``live`` does not hold (None: no drift)."""
    if isinstance(want, Mapping):
        if not isinstance(live, Mapping):
            return path or "."
        if _field(path) in ATOMIC_MAPS and set(live) - set(want):
            return path
        for key, value in want.items():
            sub = f"{path}.{key}" if path else str(key)
            if key not in live:
                if _empty(value):
                    continue
                return sub
            found = drift(live[key], value, sub)
            if found is not None:
                return found
        return None
    if isinstance(want, list):
        return _list_drift(live, want, path)
    if isinstance(want, str) and isinstance(live, str) and live != want and ".resources." in f".{path}":
        try:
            return None if kube_quantity(live) == kube_quantity(want) else path
        except ValueError:
            return path
    if isinstance(want, bool) or isinstance(live, bool):
        return None if live is want else path
    return None if live == want else path


def _list_drift(live: Any, want: Sequence[Any], path: str) -> str | None:
    if not isinstance(live, list):
        return path
    keys = LIST_MAP_KEYS.get(_field(path))
    if keys and all(isinstance(w, Mapping) for w in want):
        for i, entry in enumerate(want):
            ident = [k for k in keys if k in entry]
            matches = [e for e in live if isinstance(e, Mapping) and all(e.get(k) == entry[k] for k in ident)]
            if len(matches) != 1:
                return f"{path}[{i}]"
            found = drift(matches[0], entry, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if len(live) != len(want):
        return path
    for i, (have, entry) in enumerate(zip(live, want, strict=True)):
        found = drift(have, entry, f"{path}[{i}]")
        if found is not None:
            return found
    return None
