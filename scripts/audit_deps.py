#!/usr/bin/env python3
"""Audit the installed Python distributions against PyPI's advisory data (stdlib only).

The fallback for when ``pip-audit`` cannot reach its service: pip-audit asks
``https://pypi.org/pypi/<name>/<version>/json`` (or api.osv.dev) for the vulnerabilities of the
*installed* version. Where only the per-project document ``https://pypi.org/pypi/<name>/json`` is
served, that carries ``info.version`` (the latest release) and the ``vulnerabilities`` of that
latest release only. So, per installed distribution (editable installs skipped):

* installed == latest: audited — every listed, non-withdrawn vulnerability applies (as in
  pip-audit's PyPI service), unless its ``fixed_in`` names the installed version itself (a stale
  listing); the report gives the versions that fix it;
* installed != latest: "not auditable here (installed X, latest Y)" — the latest release's list
  says nothing about another version;
* the index unreachable, an HTTP error, a malformed answer: "error" — never "no vulnerabilities".

Exit status: 1 if a vulnerability applies; else 2 if any distribution could not be fetched (or,
with ``--strict``, could not be audited); else 0. The last line is the summary:
``N distributions, M audited, K vulnerable, U unauditable, E errors``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

DEFAULT_INDEX = "https://pypi.org/pypi"

# PEP 440, as in packaging.version (public domain regex of the PEP's appendix).
_VERSION = re.compile(
    r"""^\s*v?
    (?:(?P<epoch>[0-9]+)!)?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?P<pre>[-_\.]?(?P<pre_l>alpha|a|beta|b|preview|pre|c|rc)[-_\.]?(?P<pre_n>[0-9]+)?)?
    (?P<post>(?:-(?P<post_n1>[0-9]+))|(?:[-_\.]?(?P<post_l>post|rev|r)[-_\.]?(?P<post_n2>[0-9]+)?))?
    (?P<dev>[-_\.]?(?P<dev_l>dev)[-_\.]?(?P<dev_n>[0-9]+)?)?
    (?:\+(?P<local>[a-z0-9]+(?:[-_\.][a-z0-9]+)*))?
    \s*$""",
    re.VERBOSE | re.IGNORECASE,
)
_PRE = {"alpha": "a", "a": "a", "beta": "b", "b": "b", "c": "rc", "pre": "rc", "preview": "rc", "rc": "rc"}
_INF = float("inf")


def version_key(text: str) -> tuple[Any, ...]:
    """A sort key of a PEP 440 version (local labels ignored); ValueError if it is not one."""
    m = _VERSION.match(text)
    if m is None:
        raise ValueError(f"not a PEP 440 version: {text!r}")
    release = [int(p) for p in m.group("release").split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()  # 1.0 == 1.0.0
    pre_l = m.group("pre_l")
    post = m.group("post_n1") or m.group("post_n2") or ("0" if m.group("post_l") else None)
    dev = m.group("dev_n") or ("0" if m.group("dev_l") else None)
    # Order within a release: dev < pre (a < b < rc) < final < post; a dev of a pre sorts before it.
    if pre_l is not None:
        pre: tuple[Any, ...] = (_PRE[pre_l.lower()], int(m.group("pre_n") or 0))
    elif dev is not None and post is None:
        pre = ("", -1)  # 1.0.dev1 < 1.0a1
    else:
        pre = ("z", _INF)  # final (and post) releases after every pre-release
    return (
        int(m.group("epoch") or 0),
        tuple(release),
        pre,
        -1 if post is None else int(post),
        _INF if dev is None else int(dev),
    )


def same_version(a: str, b: str) -> bool:
    try:
        return version_key(a) == version_key(b)
    except ValueError:
        return a.strip().lower() == b.strip().lower()


def canonical_name(name: str) -> str:
    """PEP 503 normalisation (the index's project URL)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Vulnerability:
    id: str
    aliases: tuple[str, ...]
    fixed_in: tuple[str, ...]  # versions newer than the installed one that fix it
    summary: str = ""
    link: str = ""


@dataclass(frozen=True)
class Finding:
    name: str
    installed: str
    status: str  # "audited" | "unauditable" | "error"
    latest: str | None = None
    detail: str = ""
    vulnerabilities: tuple[Vulnerability, ...] = field(default=())

    @property
    def vulnerable(self) -> bool:
        return bool(self.vulnerabilities)


def applies(entry: Mapping[str, Any], installed: str) -> bool:
    """Whether a vulnerability listed for the installed (= latest) release applies to it."""
    if entry.get("withdrawn"):
        return False
    fixed = entry.get("fixed_in") or []
    return not any(isinstance(f, str) and same_version(f, installed) for f in fixed)


def _fixes_after(entry: Mapping[str, Any], installed: str) -> tuple[str, ...]:
    out = []
    for f in entry.get("fixed_in") or []:
        try:
            if isinstance(f, str) and version_key(f) > version_key(installed):
                out.append(f)
        except ValueError:
            out.append(str(f))
    return tuple(out)


def audit_one(name: str, installed: str, project: Mapping[str, Any] | None, error: str = "") -> Finding:
    """The decision for one distribution from the index's per-project JSON (None: not fetched)."""
    if project is None:
        return Finding(name, installed, "error", detail=error or "no answer from the index")
    info = project.get("info")
    latest = info.get("version") if isinstance(info, Mapping) else None
    vulns = project.get("vulnerabilities")
    if not isinstance(latest, str) or not isinstance(vulns, list):
        return Finding(
            name, installed, "error", detail="the index's answer has no info.version or vulnerabilities"
        )
    try:
        cmp = (version_key(installed) > version_key(latest)) - (version_key(installed) < version_key(latest))
    except ValueError as exc:
        return Finding(name, installed, "unauditable", latest, f"not auditable here ({exc})")
    if cmp != 0:
        newer = "older than" if cmp < 0 else "newer than"
        return Finding(
            name,
            installed,
            "unauditable",
            latest,
            f"not auditable here (installed {installed}, latest {latest}: the index lists the "
            f"vulnerabilities of its latest release only, and the installed one is {newer} it)",
        )
    found = tuple(
        Vulnerability(
            id=str(v.get("id") or "?"),
            aliases=tuple(str(a) for a in v.get("aliases") or ()),
            fixed_in=_fixes_after(v, installed),
            summary=str(v.get("summary") or v.get("details") or "")[:200],
            link=str(v.get("link") or ""),
        )
        for v in vulns
        if isinstance(v, Mapping) and applies(v, installed)
    )
    return Finding(name, installed, "audited", latest, vulnerabilities=found)


def installed_distributions(skip_editable: bool = True) -> list[tuple[str, str]]:
    """(name, version) of every distribution on sys.path, once each; editable installs skipped."""
    out: dict[str, tuple[str, str]] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        if skip_editable and _is_editable(dist):
            continue
        out.setdefault(canonical_name(name), (name, dist.version))
    return sorted(out.values(), key=lambda nv: canonical_name(nv[0]))


def _is_editable(dist: metadata.Distribution) -> bool:
    text = dist.read_text("direct_url.json")
    if not text:
        return False
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return False
    return bool(isinstance(doc, dict) and (doc.get("dir_info") or {}).get("editable"))


def fetch_project(index: str, name: str, timeout: float) -> tuple[dict[str, Any] | None, str]:
    url = f"{index.rstrip('/')}/{canonical_name(name)}/json"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            doc = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return None, f"{url}: HTTP {exc.code}" + (" (not on the index)" if exc.code == 404 else "")
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return None, f"{url}: {getattr(exc, 'reason', exc)}"
    except json.JSONDecodeError as exc:
        return None, f"{url}: not JSON ({exc})"
    if not isinstance(doc, dict):
        return None, f"{url}: not a JSON object"
    return doc, ""


def audit(
    dists: Sequence[tuple[str, str]], index: str = DEFAULT_INDEX, timeout: float = 20.0, workers: int = 8
) -> list[Finding]:
    def one(nv: tuple[str, str]) -> Finding:
        doc, error = fetch_project(index, nv[0], timeout)
        finding = audit_one(nv[0], nv[1], doc, error)
        if finding.status == "error" and error.endswith("(not on the index)"):
            return Finding(nv[0], nv[1], "unauditable", detail=f"not auditable here ({error})")
        return finding

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(one, dists))


def summary(findings: Iterable[Finding]) -> dict[str, int]:
    fs = list(findings)
    return {
        "distributions": len(fs),
        "audited": sum(f.status == "audited" for f in fs),
        "vulnerable": sum(f.vulnerable for f in fs),
        "vulnerabilities": sum(len(f.vulnerabilities) for f in fs),
        "unauditable": sum(f.status == "unauditable" for f in fs),
        "errors": sum(f.status == "error" for f in fs),
    }


def exit_code(findings: Sequence[Finding], strict: bool = False) -> int:
    s = summary(findings)
    if s["vulnerable"]:
        return 1
    if s["errors"] or (strict and s["unauditable"]):
        return 2
    return 0


def report(findings: Sequence[Finding], verbose: bool = False) -> str:
    lines = []
    for f in findings:
        if f.vulnerable:
            for v in f.vulnerabilities:
                fix = f"fixed in {', '.join(v.fixed_in)}" if v.fixed_in else "no fixed release listed"
                also = f" ({', '.join(v.aliases)})" if v.aliases else ""
                lines.append(
                    f"VULNERABLE {f.name} {f.installed}: {v.id}{also}, {fix}. {v.summary} {v.link}".rstrip()
                )
        elif f.status == "error":
            lines.append(f"ERROR      {f.name} {f.installed}: {f.detail}")
        elif f.status == "unauditable" and verbose:
            lines.append(f"UNAUDITED  {f.name}: {f.detail}")
        elif f.status == "audited" and verbose:
            lines.append(f"ok         {f.name} {f.installed} (latest): no known vulnerabilities")
    s = summary(findings)
    lines.append(
        f"{s['distributions']} distributions, {s['audited']} audited, {s['vulnerable']} vulnerable "
        f"({s['vulnerabilities']} vulnerabilities), {s['unauditable']} unauditable, {s['errors']} errors"
    )
    if s["errors"]:
        lines.append("not a clean audit: the index could not be read for some distributions")
    elif s["unauditable"]:
        lines.append(
            f"{s['unauditable']} distributions are not the latest release: the index's data cannot "
            "say whether they are affected (pip-audit with per-version data or OSV can)"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument(
        "--index",
        default=os.environ.get("HETSCHED_AUDIT_INDEX", DEFAULT_INDEX),
        help=f"JSON API root (default {DEFAULT_INDEX}, or $HETSCHED_AUDIT_INDEX)",
    )
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per request (default 20)")
    p.add_argument("--workers", type=int, default=8, help="concurrent requests (default 8)")
    p.add_argument("--strict", action="store_true", help="exit 2 when a distribution cannot be audited")
    p.add_argument("--json", metavar="FILE", help="also write the findings as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="list every distribution")
    args = p.parse_args(argv)
    findings = audit(installed_distributions(), args.index, args.timeout, args.workers)
    print(report(findings, args.verbose))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "summary": summary(findings),
                    "findings": [
                        {
                            "name": f.name,
                            "installed": f.installed,
                            "latest": f.latest,
                            "status": f.status,
                            "detail": f.detail,
                            "vulnerabilities": [asdict(v) for v in f.vulnerabilities],
                        }
                        for f in findings
                    ],
                },
                out,
                indent=1,
            )
    return exit_code(findings, args.strict)


if __name__ == "__main__":
    sys.exit(main())
