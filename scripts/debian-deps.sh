#!/usr/bin/env bash
# The Debian packages `make test` needs, installed with apt-get when missing (`make debs`):
#   prometheus   Prometheus server and promtool (the alert rules and metrics tests)
#   chromium     the HTML report's screenshot test
#   python3-venv `python3 -m venv` (Debian ships ensurepip separately)
#   g++          the C++ compiler PyTorch's inductor needs when a vLLM CPU engine compiles its model
#   libnuma1     libnuma.so.1, which vLLM's CPU kernels link against
# Nothing to do when all are present (no apt-get call, no root needed). Otherwise apt-get runs as root,
# or through sudo; without either, or on a system without apt-get, it names what is missing and fails.
set -euo pipefail

need=()
has() { command -v "$1" >/dev/null 2>&1; }
has prometheus && has promtool || need+=(prometheus)
has chromium || need+=(chromium)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
has g++ || need+=(g++)
{ /sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null || true; } | grep -q 'libnuma\.so\.1 ' || need+=(libnuma1)

if [[ ${#need[@]} -eq 0 ]]; then
  exit 0
fi
echo "[debian-deps] missing: ${need[*]}" >&2
if ! has apt-get; then
  echo "[debian-deps] no apt-get here: install the equivalents of these Debian packages, then re-run" >&2
  exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then
  if has sudo; then
    sudo=(sudo)
  else
    echo "[debian-deps] not root and no sudo: run  apt-get install ${need[*]}  as root, then re-run" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "[debian-deps] installed: ${need[*]}" >&2
