"""The real engines' side of the serving tests and benchmark: the engine environment
(``scripts/engine-env.sh``), the tiny test model (built in that environment, cached by content), and
an OpenAI-API client with timings and a Prometheus metric reader (standard library only, so the
benchmark runs without the test dependencies).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ENGINE_ENV_SCRIPT = REPO / "scripts" / "engine-env.sh"
ENGINE_LOCK = REPO / "scripts" / "engine-env.lock.txt"
ENGINE_SCRIPTS = REPO / "tests" / "serving" / "engine"
#: The one builder of random-weight models (the CPU benchmark's too), and the tests' shape of it.
MODEL_BUILDER = REPO / "benchmarks" / "cpu_models.py"
TINY_MODEL_ARGS = ("tiny", "--dtype", "bfloat16", "--seed", "0")


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hetsched"


@dataclass(frozen=True)
class EngineEnv:
    """The engine virtual environment: vLLM's CPU build, NIXL and vllm-router."""

    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def router(self) -> Path:
        return self.root / "bin" / "vllm-router"

    @property
    def interpreters(self) -> dict[str, str]:
        """The images' executables -> this environment's (what the local kubelet maps, and only this)."""
        return {"python3": str(self.python), "vllm-router": str(self.router)}

    def run(self, *args: str, timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run this environment's Python (outside the repository root, which would shadow `operator`)."""
        env = {**os.environ, "PYTHONSAFEPATH": "1", "HF_HUB_OFFLINE": "1", **kwargs.pop("env", {})}
        return subprocess.run(
            [str(self.python), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
            **kwargs,
        )


def engine_env() -> EngineEnv:
    """The engine environment, installed first when missing (``make engines``: minutes, once)."""
    result = subprocess.run(
        [str(ENGINE_ENV_SCRIPT)], capture_output=True, text=True, timeout=3600, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/engine-env.sh failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return EngineEnv(Path(result.stdout.strip().splitlines()[-1]))


def tiny_model(env: EngineEnv) -> Path:
    """The tiny random-weight Llama (``tiny`` of benchmarks/cpu_models.py), built once per content:
    the builder, its arguments and the engine lock (torch/transformers versions) name the folder."""
    builder = MODEL_BUILDER
    key = hashlib.sha256(
        builder.read_bytes() + ENGINE_LOCK.read_bytes() + " ".join(TINY_MODEL_ARGS).encode()
    ).hexdigest()[:12]
    dest = cache_root() / "models" / f"tiny-llama-{key}"
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        result = env.run(str(builder), str(staging), *TINY_MODEL_ARGS, cwd=staging)
        if result.returncode != 0:
            raise RuntimeError(f"building the tiny model failed:\n{result.stderr[-3000:]}")
        try:
            staging.rename(dest)  # atomic; a concurrent builder made the same bytes
        except OSError:
            if not (dest / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


# OpenAI API client
@dataclass(frozen=True)
class Reply:
    status: int
    text: str  # generated text (empty when the status is not 200)
    body: Any  # the JSON body, or the error text
    seconds: float  # until the whole answer arrived
    ttft: float | None  # until the first token (streaming: the first chunk with text)
    chunks: int = 0  # streaming: chunks carrying text
    usage: dict[str, Any] | None = None


def request(
    base: str,
    model: str,
    prompt: str,
    *,
    chat: bool = False,
    stream: bool = False,
    max_tokens: int = 32,
    timeout: float = 300,
) -> Reply:
    """One greedy completion (``/v1/completions``) or chat completion (``/v1/chat/completions``)."""
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
        path = "/v1/chat/completions"
    else:
        body["prompt"] = prompt
        path = "/v1/completions"
    if stream:
        body["stream_options"] = {"include_usage": True}
    url = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200 or not stream:
            raw = resp.read()
            seconds = time.monotonic() - started
            try:
                data: Any = json.loads(raw)
            except ValueError:
                data = raw.decode(errors="replace")
            if resp.status != 200:
                return Reply(resp.status, "", data, seconds, None)
            choice = data["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
            return Reply(200, text or "", data, seconds, seconds, usage=data.get("usage"))
        pieces: list[str] = []
        ttft = None
        usage = None
        for raw_line in resp:
            line = raw_line.decode().strip()
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            event = json.loads(payload)
            usage = event.get("usage") or usage
            for choice in event.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                if piece:
                    ttft = ttft if ttft is not None else time.monotonic() - started
                    pieces.append(piece)
        return Reply(200, "".join(pieces), None, time.monotonic() - started, ttft, len(pieces), usage)
    finally:
        conn.close()


def metrics(base: str, timeout: float = 30) -> dict[str, float]:
    """A Prometheus endpoint's samples, ``name{labels}`` -> value."""
    url = urllib.parse.urlparse(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total
