"""Build the pinned control-plane binaries from source with ``go``, into a cache outside the repo.

Layout: ``<cache>/bin/<key>/`` where ``<cache>`` is ``$HETSCHED_CACHE_DIR`` or
``~/.cache/hetsched`` and ``<key>`` is derived from ``versions.yaml`` (plus the build recipe and
the platform), so the binaries are reused while the pins hold.

Atomicity: a build fills ``<cache>/bin/.partial-<key>/``; each binary is moved in only once its
``go build`` has finished, and the whole folder is renamed to ``<key>`` only after every binary
is there and reports the pinned version. An interrupted build therefore never looks done (the next
build reuses the binaries that were complete and builds the rest). A file lock serialises builds
started at the same time (e.g. ``make`` and pytest).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

VERSIONS_FILE = Path(__file__).with_name("versions.yaml")

# Bump when the recipe below changes (flags, wrapper modules): it is part of the cache key.
RECIPE_VERSION = 1

KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
COMPONENTS: dict[str, tuple[str, ...]] = {
    "kubernetes": KUBERNETES_COMMANDS,
    "etcd": ("etcd",),
    "kwok": ("kwok",),
    "helm": ("helm",),
}
BINARIES: tuple[str, ...] = tuple(b for bins in COMPONENTS.values() for b in bins)
MANIFEST = "manifest.json"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Pins:
    """The versions in ``versions.yaml``."""

    kubernetes: str
    kubernetes_staging: str
    etcd: str
    kwok: str
    helm: str

    @property
    def kubernetes_major_minor(self) -> tuple[str, str]:
        major, minor = self.kubernetes.removeprefix("v").split(".")[:2]
        return major, minor


class BuildError(RuntimeError):
    """A ``go`` step failed; the message names the step and ends with its log's tail."""


def load_pins(path: Path = VERSIONS_FILE) -> Pins:
    """Read ``versions.yaml``; a missing or malformed entry is a ValueError naming it."""
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of components to versions")

    def get(component: str, field: str = "version") -> str:
        entry = data.get(component)
        value = entry.get(field) if isinstance(entry, dict) else None
        if not isinstance(value, str) or not value.startswith("v"):
            raise ValueError(f"{path}: {component}.{field} must be a version string like v1.2.3")
        return value

    return Pins(
        kubernetes=get("kubernetes"),
        kubernetes_staging=get("kubernetes", "stagingVersion"),
        etcd=get("etcd"),
        kwok=get("kwok"),
        helm=get("helm"),
    )


def _go_platform() -> tuple[str, str]:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)
    return sys.platform.removesuffix("2"), arch  # "linux", "darwin"


def cache_key(pins: Pins, goos: str | None = None, goarch: str | None = None) -> str:
    """A folder name that changes whenever a pin, the recipe or the platform changes.

    Readable prefix (the Kubernetes version) plus a hash of everything that shapes the binaries.
    The Go version is deliberately not part of it: a Go upgrade should not cost a 10-minute rebuild.
    """
    if goos is None or goarch is None:
        goos, goarch = _go_platform()
    material = json.dumps(
        {"pins": asdict(pins), "recipe": RECIPE_VERSION, "os": goos, "arch": goarch}, sort_keys=True
    )
    return f"{pins.kubernetes}-{hashlib.sha256(material.encode()).hexdigest()[:12]}"


def cache_root() -> Path:
    """``$HETSCHED_CACHE_DIR``, else ``$XDG_CACHE_HOME/hetsched``, else ``~/.cache/hetsched``."""
    if env := os.environ.get("HETSCHED_CACHE_DIR"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hetsched"


def bin_dir(pins: Pins | None = None) -> Path:
    """Where the binaries for these pins live (whether or not they are built yet)."""
    return cache_root() / "bin" / cache_key(pins or load_pins())


def is_built(directory: Path) -> bool:
    """True when ``directory`` is a finished build: a manifest and every binary executable."""
    if not (directory / MANIFEST).is_file():
        return False
    return all(os.access(directory / name, os.X_OK) for name in BINARIES)


def _print_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _file_lock(path: Path, progress: Progress) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another build holding {path} ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # Our wrapper modules must resolve on their own, never through a go.work of the caller.
    env["GOWORK"] = "off"
    env["GO111MODULE"] = "on"
    return env


class _Builder:
    """Runs the ``go`` steps of one build, logging each to a file and reporting elapsed time."""

    def __init__(self, pins: Pins, logs: Path, progress: Progress) -> None:
        self.pins = pins
        self.logs = logs
        self.progress = progress
        self.env = _go_env()
        self.timings: dict[str, float] = {}

    def run(self, label: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
        """Run one step; print progress every few seconds; return its stdout."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / (re.sub(r"[^A-Za-z0-9.]+", "-", label).strip("-") + ".log")
        start = time.monotonic()
        interactive = sys.stderr.isatty()
        # Go's own stdout (json of `go mod download`) goes to a separate file from its stderr log.
        with log_path.open("w") as log, tempfile.TemporaryFile("w+") as out:
            log.write(f"$ {' '.join(argv)}\n(cwd {cwd})\n")
            log.flush()
            # A new session so that an interrupt can stop go and the compilers it started.
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env or self.env, stdout=out, stderr=log, start_new_session=True
            )
            last_report = 0.0
            try:
                while True:
                    try:
                        proc.wait(timeout=1)
                        break
                    except subprocess.TimeoutExpired:
                        elapsed = time.monotonic() - start
                        if interactive:
                            print(f"\r  {label}: {elapsed:4.0f}s", end="", file=sys.stderr, flush=True)
                        elif elapsed - last_report >= 30:
                            last_report = elapsed
                            self.progress(f"  {label}: {elapsed:.0f}s ...")
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()
                raise
            elapsed = time.monotonic() - start
            if interactive:
                print("\r", end="", file=sys.stderr)
            out.seek(0)
            stdout = out.read()
        if proc.returncode != 0:
            tail = "".join(log_path.read_text().splitlines(keepends=True)[-30:])
            raise BuildError(f"{label} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
        self.progress(f"  {label}: done in {elapsed:.0f}s")
        return stdout

    def download_info(self, module: str, version: str, cwd: Path) -> dict[str, Any]:
        out = self.run(f"download {module}", ["go", "mod", "download", "-json", f"{module}@{version}"], cwd)
        info: dict[str, Any] = json.loads(out)
        if info.get("Error"):
            raise BuildError(f"go mod download {module}@{version}: {info['Error']}")
        return info

    # -- components ---------------------------------------------------------------------------

    def kubernetes(self, work: Path, out: Path) -> None:
        """One ``go build`` of the four commands through a wrapper module (see module docstring)."""
        pins = self.pins
        info = self.download_info("k8s.io/kubernetes", pins.kubernetes, work)
        upstream_mod = Path(info["GoMod"]).read_text()
        go_mod = kubernetes_wrapper_go_mod(upstream_mod, pins)
        (work / "go.mod").write_text(go_mod)
        imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{cmd}"' for cmd in KUBERNETES_COMMANDS)
        # A build-tagged file keeps the four commands in the module graph for `go mod tidy`.
        (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
        self.run("kubernetes go mod tidy", ["go", "mod", "tidy"], work)
        commit = (info.get("Origin") or {}).get("Hash", "")
        ldflags = kubernetes_ldflags(pins, commit=commit, build_date=info.get("Time", ""))
        packages = [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBERNETES_COMMANDS]
        self.run(
            f"build {', '.join(KUBERNETES_COMMANDS)}",
            ["go", "build", "-ldflags", ldflags, "-o", f"{out}/", *packages],
            work,
        )

    def etcd(self, work: Path, out: Path) -> None:
        """etcd's own ``main`` lives in an unpublished module; call ``etcdmain.Main`` from ours."""
        (work / "go.mod").write_text(
            f"module hetsched.local/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 {self.pins.etcd}\n"
        )
        (work / "main.go").write_text(
            "// Command etcd runs go.etcd.io/etcd/server/v3/etcdmain, as etcd's own main does.\n"
            'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
            "func main() { etcdmain.Main(os.Args) }\n"
        )
        self.run("etcd go mod tidy", ["go", "mod", "tidy"], work)
        self.run("build etcd", ["go", "build", "-ldflags", "-s -w", "-o", str(out / "etcd"), "."], work)

    def kwok(self, work: Path, out: Path) -> None:
        env = dict(self.env, GOBIN=str(out))
        target = f"sigs.k8s.io/kwok/cmd/kwok@{self.pins.kwok}"
        self.run("build kwok", ["go", "install", "-ldflags", "-s -w", target], work, env=env)

    def helm(self, work: Path, out: Path) -> None:
        info = self.download_info("helm.sh/helm/v3", self.pins.helm, work)
        client_go = _required_version(Path(info["GoMod"]).read_text(), "k8s.io/client-go")
        commit = (info.get("Origin") or {}).get("Hash", "")
        ldflags = helm_ldflags(self.pins.helm, client_go, commit=commit)
        env = dict(self.env, GOBIN=str(out))
        target = f"helm.sh/helm/v3/cmd/helm@{self.pins.helm}"
        self.run("build helm", ["go", "install", "-ldflags", ldflags, target], work, env=env)


def kubernetes_wrapper_go_mod(upstream_go_mod: str, pins: Pins) -> str:
    """go.mod of the wrapper: require k8s.io/kubernetes and pin every staging module it replaces.

    kubernetes' own go.mod replaces its ``k8s.io/<staging>`` modules by ``./staging/...`` paths,
    which only work inside its repository (so it cannot be ``go install``ed); the published
    ``v0.<minor>.<patch>`` of each is the same code.
    """
    go_directive = "1.26.0"
    staging: list[str] = []
    for line in upstream_go_mod.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "go":
            go_directive = words[1]
        if "=> ./staging/" in line:
            staging.append(line.split("=>")[0].strip().removeprefix("replace").strip())
    if not staging:
        raise BuildError("k8s.io/kubernetes go.mod lists no ./staging replacements; recipe out of date")
    replaces = "\n".join(f"\t{mod} => {mod} {pins.kubernetes_staging}" for mod in sorted(staging))
    return (
        "module hetsched.local/kubernetes\n\n"
        f"go {go_directive}\n\n"
        f"require k8s.io/kubernetes {pins.kubernetes}\n\n"
        f"replace (\n{replaces}\n)\n"
    )


def kubernetes_ldflags(pins: Pins, commit: str = "", build_date: str = "") -> str:
    """What kubernetes' hack/lib/version.sh sets, so ``/version`` and ``kubectl version`` are right."""
    major, minor = pins.kubernetes_major_minor
    values = {
        "gitVersion": pins.kubernetes,
        "gitMajor": major,
        "gitMinor": minor,
        "gitCommit": commit or "unknown",
        "gitTreeState": "clean",
        # The release time from the module proxy: reproducible, unlike "now".
        "buildDate": build_date.replace(".000", "") or "1970-01-01T00:00:00Z",
    }
    flags = ["-s", "-w"]
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {package}.{name}={value}" for name, value in values.items()]
    return " ".join(flags)


def helm_ldflags(helm_version: str, client_go_version: str, commit: str = "") -> str:
    """Helm's Makefile flags: its version, and the Kubernetes version it assumes when offline.

    ``chartutil.k8sVersionMinor`` is what ``helm template``/``lint`` compare a chart's
    ``kubeVersion`` against; the Makefile derives it from client-go (v0.34 -> 1.34).
    """
    parts = client_go_version.removeprefix("v").split(".")
    k8s_major, k8s_minor = str(int(parts[0]) + 1), parts[1]
    flags = [
        "-s",
        "-w",
        f"-X helm.sh/helm/v3/internal/version.version={helm_version}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    if commit:
        flags.append(f"-X helm.sh/helm/v3/internal/version.gitCommit={commit}")
    for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {package}.k8sVersionMajor={k8s_major}", f"-X {package}.k8sVersionMinor={k8s_minor}"]
    return " ".join(flags)


def _required_version(go_mod: str, module: str) -> str:
    for line in go_mod.splitlines():
        words = line.split()
        if words[:1] == ["require"]:
            words = words[1:]
        if len(words) >= 2 and words[0] == module:
            return words[1]
    raise BuildError(f"{module} not found in go.mod")


# How to ask each binary for its version (without talking to a server).
_VERSION_ARGS: dict[str, tuple[str, ...]] = {
    "kube-apiserver": ("--version",),
    "kube-controller-manager": ("--version",),
    "kube-scheduler": ("--version",),
    "kubectl": ("version", "--client"),
    "etcd": ("--version",),
    "kwok": ("--version",),
    "helm": ("version", "--short"),
}


def _version_output(binary: Path) -> str:
    argv = [str(binary), *_VERSION_ARGS[binary.name]]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return result.stdout + result.stderr


def expected_versions(pins: Pins) -> dict[str, str]:
    """The text each binary's version output must contain."""
    expected = dict.fromkeys(KUBERNETES_COMMANDS, pins.kubernetes)
    expected.update(etcd=pins.etcd.removeprefix("v"), kwok=pins.kwok.removeprefix("v"), helm=pins.helm)
    return expected


def ensure_binaries(
    pins: Pins | None = None, *, force: bool = False, progress: Progress = _print_progress
) -> Path:
    """Return the folder holding every pinned binary, building what is missing first."""
    pins = pins or load_pins()
    key = cache_key(pins)
    final = cache_root() / "bin" / key
    if not force and is_built(final):
        return final
    if shutil.which("go") is None:
        raise BuildError("the `go` command is needed to build the control plane (Go >= 1.26)")
    with _file_lock(final.parent / f".{key}.lock", progress):
        if not force and is_built(final):  # another process finished it while we waited
            return final
        partial = final.parent / f".partial-{key}"
        if force and partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        for leftover in partial.iterdir():  # scratch folders of a run that was killed
            if leftover.is_dir() and leftover.name != "logs":
                shutil.rmtree(leftover, ignore_errors=True)
        builder = _Builder(pins, partial / "logs", progress)
        progress(f"building the control plane {pins.kubernetes} into {final} (cached afterwards)")
        total_start = time.monotonic()
        for component, binaries in COMPONENTS.items():
            if all(os.access(partial / b, os.X_OK) for b in binaries):
                progress(f"  {component}: already built by an earlier, interrupted run")
                continue
            start = time.monotonic()
            with tempfile.TemporaryDirectory(prefix=f"{component}-", dir=partial) as tmp:
                work, out = Path(tmp) / "src", Path(tmp) / "out"
                work.mkdir()
                out.mkdir()
                getattr(builder, component)(work, out)
                for binary in binaries:
                    os.replace(out / binary, partial / binary)  # same filesystem: atomic
            builder.timings[component] = round(time.monotonic() - start, 1)
            progress(f"{component} built in {builder.timings[component]:.0f}s")
        _check_versions(partial, pins)
        manifest = {
            "pins": asdict(pins),
            "recipe": RECIPE_VERSION,
            "go": subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True).stdout.strip(),
            "build_seconds": builder.timings,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if final.exists():  # --force: swap the old build out; running processes keep their inodes
            old = final.parent / f".old-{key}-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(partial, final)
        progress(f"control plane built in {time.monotonic() - total_start:.0f}s: {final}")
        return final


def _check_versions(directory: Path, pins: Pins) -> None:
    for name, want in expected_versions(pins).items():
        output = _version_output(directory / name)
        if want not in output:
            raise BuildError(f"{name} reports {output.strip()!r}, expected {want}")
