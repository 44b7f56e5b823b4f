"""Helpers of the Helm chart tests (tests/integration/test_chart*.py): the chart, the example
workloads, an operator run under a ServiceAccount's identity, and RBAC checks."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from support import REPO
from support.cluster import LocalCluster, free_port

CHART = REPO / "charts" / "hetsched"
EXAMPLES = REPO / "examples" / "workloads"
DEMO_WORKLOADS = ("chatbot.yaml", "coding.yaml", "computer-use.yaml", "web-use.yaml")


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def workload_docs(namespace: str) -> list[dict[str, Any]]:
    """The four single-workload examples (mix.yaml over-subscribes the demo pools on purpose)."""
    out = []
    for path in (EXAMPLES / name for name in DEMO_WORKLOADS):
        for doc in docs(path.read_text()):
            doc["metadata"]["namespace"] = namespace
            out.append(doc)
    return out


def condition_status(obj: dict[str, Any], type_: str) -> str | None:
    """The status (True/False/Unknown) of the object's condition ``type_``, or None."""
    for cond in obj.get("status", {}).get("conditions", []):
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


# An RBAC denial in the operator's log (the API server's message names the user), or Kopf falling
# back for lack of permissions. Other 403s (e.g. writing into a namespace being deleted) are not RBAC.
RBAC_DENIAL = re.compile(r'forbidden: User \\?"system:serviceaccount:|Not enough permissions')


class OperatorProcess:
    """`python -m hetsched.operator operator run` on a free loopback port, logging to a file."""

    def __init__(self, kubeconfig: Path, log: Path, *args: str) -> None:
        self.port = free_port()
        self.log = log
        # KUBECONFIG as well as --kubeconfig: Kopf's login (kubernetes_asyncio) reads the variable
        # when it is imported, before `operator run` parses --kubeconfig.
        env = os.environ | {"KUBECONFIG": str(kubeconfig)}
        argv = [sys.executable, "-m", "hetsched.operator", "operator", "run", "--kubeconfig", str(kubeconfig)]
        argv += ["--host", "127.0.0.1", "--port", str(self.port), "--resync-seconds", "5", *args]
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, cluster: LocalCluster, timeout: float = 90) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"operator exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}"
                )
            return http_status(self.url + "/readyz") == 200

        cluster.wait_for(ready, timeout=timeout, what="operator /readyz")

    def log_text(self) -> str:
        if not self._log_file.closed:
            self._log_file.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_file.close()


def sa_kubeconfig(cluster: LocalCluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig that authenticates with a bound token of ServiceAccount namespace/account."""
    token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=2h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    server = admin["clusters"][0]["cluster"]
    cluster_entry = {"server": server["server"]}
    if "certificate-authority-data" in server:
        cluster_entry["certificate-authority-data"] = server["certificate-authority-data"]
    else:
        ca = Path(server["certificate-authority"]).read_bytes()
        cluster_entry["certificate-authority-data"] = base64.b64encode(ca).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster_entry}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [
            {"name": account, "context": {"cluster": "local", "user": account, "namespace": namespace}}
        ],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def can_i(cluster: LocalCluster, subject: str, *args: str) -> bool:
    result = cluster.kubectl("auth", "can-i", "--as", subject, *args, check=False)
    answer = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert answer in ("yes", "no"), f"auth can-i {args}: {result.stdout} {result.stderr}"
    return answer == "yes"
