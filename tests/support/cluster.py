"""What tests use of a running local cluster (the fixtures of tests/integration/conftest.py and
tests/reliability/conftest.py hand it out): kubeconfig, the pinned kubectl and helm, the operator's
command line, and a condition waiter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hetsched.operator.devcluster.cluster import Cluster
from hetsched.operator.devcluster.processes import wait_for

T = TypeVar("T")


def free_port() -> int:
    """A free TCP port on loopback (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalCluster:
    """What tests use: the kubeconfig, the pinned kubectl/helm, and a condition waiter."""

    handle: Cluster

    @property
    def kubeconfig(self) -> Path:
        return Path(self.handle.kubeconfig)

    @property
    def bin_dir(self) -> Path:
        return Path(self.handle.bin_dir)

    @property
    def state_dir(self) -> Path:
        return Path(self.handle.state_dir)

    def operator_command(
        self, *extra: str, namespaces: str, not_ready_grace: float = 5, startup_grace: float = 2
    ) -> tuple[list[str], dict[str, str], int]:
        """argv, environment and HTTP port for ``hetsched operator run`` against this cluster.

        Tests run the operator as a subprocess on a free loopback port, watching ``namespaces`` (a
        glob), with short grace periods so node-loss tests stay quick.
        """
        port = free_port()
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)}
        argv = [
            sys.executable,
            "-m",
            "hetsched.operator",
            "operator",
            "run",
            "--namespace",
            namespaces,
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--not-ready-grace-seconds",
            f"{not_ready_grace:g}",
            "--startup-grace-seconds",
            f"{startup_grace:g}",
            *extra,
        ]
        return argv, env, port

    @property
    def env(self) -> dict[str, str]:
        """KUBECONFIG, PATH (pinned binaries first) and private kubectl/helm caches."""
        return dict(self.handle.env())

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The pinned kubectl with this cluster's kubeconfig; ClusterError on failure if ``check``."""
        result: subprocess.CompletedProcess[str] = self.handle.kubectl(*args, input=input, check=check)
        return result

    def kubectl_json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "helm"), "--kubeconfig", str(self.kubeconfig), *args]
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=120, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed: {result.stderr}")
        return result

    @staticmethod
    def wait_for(check: Callable[[], T | None], timeout: float = 60, what: str = "a condition") -> T:
        """Poll until ``check`` returns something truthy-ish (not None/False); fail on timeout."""
        result: T = wait_for(check, timeout, what)
        return result
