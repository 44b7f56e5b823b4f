"""Measured serving runs: read the CSV, and map each row onto the estimator.

The CSV has the columns of NVIDIA aiconfigurator's ``silicon_sample.csv`` (benchmarks/data/README.md).
A malformed file (a missing column, a number that is not one, an unknown ``mode``) raises
:class:`MeasurementsError` naming the row and the column. A well-formed row that the model cannot
predict (a model or hardware not in the catalogs, a quantization format or parallelism we do not
model) becomes a :class:`Skip` with the reason; it is never dropped.

Mapping (docs/calibration.md, "From a CSV row to the estimator"):

* ``gemm_quant_mode`` sets the weights and the activations (the compute format) of the dense
  GEMMs, ``moe_quant_mode`` the routed experts' weights: ``fp8``/``fp8_block`` → FP8 weights and
  activations; ``nvfp4`` → NVFP4 weights and activations (FP4 tensor cores; Hopper falls back to its
  FP8 rate); ``w4a16_mxfp4`` → MXFP4 weights, BF16 activations; empty → BF16.
* KV cache: FP8 when the GEMMs are quantized (FP8 checkpoints ship KV scales and the engines then
  store FP8 KV), BF16 otherwise. The CSV does not record it; this is an assumption.
* Parallelism: ``tp_size`` tensor-parallel ranks per attention group, ``attention_dp_size``
  attention data-parallel groups; MoE experts span all ``tp × dp`` devices (``moe_tp_size ×
  moe_ep_size`` must equal it; when ``attention_dp_size`` is empty it is inferred from that
  product). ``batch_size`` is per attention-DP rank (aiconfigurator's convention), so the
  concurrency is ``batch_size × dp``; with ``dp = 1`` it is the concurrency. Pipeline parallelism
  and workers spanning more than one 8-GPU node are skipped.
* ``disagg`` rows: ``prefill_*``/``decode_*`` columns the same per worker, plus the worker counts;
  concurrency = decode batch × decode DP × decode workers. Rows without batch sizes or worker counts
  cannot be predicted (skipped).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hetsched.scheduler.catalog.hardware import Efficiency, HardwareSpec
from hetsched.scheduler.catalog.hardware_catalog import get_hardware as _get_hardware
from hetsched.scheduler.catalog.hardware_catalog import resolve_hardware_name
from hetsched.scheduler.catalog.model_catalog import get_model as _get_model
from hetsched.scheduler.catalog.model_catalog import resolve_model_name
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.cost import Precisions
from hetsched.scheduler.estimator.precision import Precision
from hetsched.scheduler.estimator.serving import (
    ARRIVALS,
    ColocatedSetup,
    DisaggregatedSetup,
    Parallel,
    RequestShape,
    ServingPrediction,
    colocated_setup,
    disaggregated_setup,
    predict_colocated,
    predict_disaggregated,
)

#: Devices of one scale-up node (HGX/DGX boards: 8 GPUs on NVLink). A worker spanning more is
#: multi-node: its collectives cross the network, which the step model does not include.
DEVICES_PER_NODE = 8

#: Share of a benchmark's requests that arrive together at its start. The measurements come from
#: fixed-concurrency runs of ``10 × concurrency`` requests whose first ``concurrency`` requests are
#: sent at once (aiconfigurator's replay of the InferenceX runs: ``request_count = concurrency ×
#: 10``), so one request in ten waits behind a full initial queue of prompts.
BENCHMARK_WARMUP_FRACTION = 0.1

#: ``gemm_quant_mode`` / ``moe_quant_mode`` → (weights, activations). Empty means bf16.
QUANT_MODES: dict[str, tuple[Precision, Precision]] = {
    "": (Precision.BF16, Precision.BF16),
    "fp32": (Precision.FP32, Precision.FP32),
    "float32": (Precision.FP32, Precision.FP32),
    "bf16": (Precision.BF16, Precision.BF16),
    "fp16": (Precision.FP16, Precision.FP16),
    "float16": (Precision.FP16, Precision.FP16),
    "fp8": (Precision.FP8, Precision.FP8),
    "fp8_block": (Precision.FP8, Precision.FP8),
    "fp8_static": (Precision.FP8, Precision.FP8),
    "nvfp4": (Precision.NVFP4, Precision.NVFP4),
    "fp4": (Precision.NVFP4, Precision.NVFP4),
    "mxfp4": (Precision.MXFP4, Precision.MXFP4),
    "w4a16_mxfp4": (Precision.MXFP4, Precision.BF16),
    "w4a8_mxfp4_fp8": (Precision.MXFP4, Precision.FP8),
    "w4a8_mxfp4_mxfp8": (Precision.MXFP4, Precision.FP8),
    "int8_wo": (Precision.INT8, Precision.BF16),
    "w8a16": (Precision.INT8, Precision.BF16),
    "int8": (Precision.INT8, Precision.INT8),
    "w8a8": (Precision.INT8, Precision.INT8),
    "int4_wo": (Precision.INT4, Precision.BF16),
    "w4a16": (Precision.INT4, Precision.BF16),
    "w4a16_awq": (Precision.INT4, Precision.BF16),
    "w4a8_awq": (Precision.INT4, Precision.FP8),
}

REQUIRED_COLUMNS = ("model_path", "system", "mode", "isl", "osl", "silicon_ttft_ms", "silicon_tpot_ms")
WORKER_FIELDS = (
    "batch_size",
    "num_workers",
    "tp_size",
    "pp_size",
    "attention_dp_size",
    "moe_tp_size",
    "moe_ep_size",
)
OPTIONAL_COLUMNS = (
    "backend",
    "backend_version",
    "precision",
    "gemm_quant_mode",
    "moe_quant_mode",
    "batch_size",
    "tp_size",
    "pp_size",
    "attention_dp_size",
    "moe_tp_size",
    "moe_ep_size",
    *(f"{phase}_{f}" for phase in ("prefill", "decode") for f in WORKER_FIELDS),
    "num_requests",
    "arrivals",
)


class MeasurementsError(ValueError):
    """The CSV is malformed; the message names the file, row and column."""


@dataclass(frozen=True, slots=True)
class Worker:
    """Parallelism columns of one worker (agg: the replica; disagg: a prefill or decode worker)."""

    batch_size: int | None
    num_workers: int | None
    tp_size: int | None
    pp_size: int | None
    attention_dp_size: int | None
    moe_tp_size: int | None
    moe_ep_size: int | None


@dataclass(frozen=True, slots=True)
class Measurement:
    """One CSV row, parsed and checked (``index`` 0-based over data rows; ``line`` in the file)."""

    index: int
    line: int
    model_path: str
    system: str
    backend: str
    backend_version: str
    precision: str
    gemm_quant_mode: str
    moe_quant_mode: str
    mode: str
    isl: int
    osl: int
    agg: Worker
    prefill: Worker
    decode: Worker
    ttft_ms: float  # NaN when the row has a problem with it
    tpot_ms: float
    #: Requests the run sent (optional column, not in aiconfigurator's files): with it, the share of
    #: requests in the first simultaneous wave is ``concurrency / num_requests``.
    num_requests: int | None = None
    #: How the run's requests arrived (optional column; ``serving.ARRIVALS``): ``staggered`` (empty;
    #: aiconfigurator's data) or ``waves`` (equal requests sent in synchronized waves: the CPU
    #: benchmark's, benchmarks/cpu_serving.py).
    arrivals: str = "staggered"
    #: Why the row cannot be read (bad values, naming row, line and column); None when it can.
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A row resolved for prediction."""

    row: Measurement
    model_key: str
    model: ModelConfig
    hardware_key: str
    hardware: HardwareSpec
    precisions: Precisions
    disaggregated: bool
    # agg: the replica; disagg: the decode worker
    parallel: Parallel
    concurrency: int  # requests in flight in the whole measured deployment
    # disagg only
    prefill_parallel: Parallel | None = None
    prefill_batch: int = 0  # prompts per prefill step per worker (all its DP ranks)
    decode_batch: int = 0  # requests per decode worker (all its DP ranks)
    prefill_workers: int = 0
    decode_workers: int = 0

    def warmup_fraction(self, default: float = BENCHMARK_WARMUP_FRACTION) -> float:
        """Share of the run's requests in its first, simultaneous wave: ``concurrency /
        num_requests`` when the row records the requests sent, else ``default`` (the runs of
        aiconfigurator's data send ``10 × concurrency``)."""
        n = self.row.num_requests
        return min(1.0, self.concurrency / n) if n else default

    @property
    def shape(self) -> RequestShape:
        """The measured requests: ``isl`` prompt tokens (no cached prefix), ``osl`` output tokens."""
        return RequestShape(self.row.isl, 0, self.row.osl, self.precisions)

    def setup(self) -> ColocatedSetup | DisaggregatedSetup:
        """The serving model's efficiency-independent part of the row's prediction (``predict``
        completes it with the efficiencies; the fit evaluates many at once)."""
        if not self.disaggregated:
            return colocated_setup(
                self.model,
                self.hardware,
                self.shape,
                self.parallel,
                concurrency=self.concurrency,
                arrivals=self.row.arrivals,
            )
        assert self.prefill_parallel is not None
        return disaggregated_setup(
            self.model,
            self.hardware,
            self.hardware,
            self.shape,
            prefill=self.prefill_parallel,
            decode=self.parallel,
            prefill_batch=self.prefill_batch,
            decode_batch=self.decode_batch,
            kv_transfer_bandwidth=kv_transfer_bandwidth(self, self.hardware, self.hardware),
            prefill_workers=self.prefill_workers,
        )

    @property
    def ttft_seconds(self) -> float:
        return self.row.ttft_ms / 1e3

    @property
    def tpot_seconds(self) -> float:
        return self.row.tpot_ms / 1e3


@dataclass(frozen=True, slots=True)
class Skip:
    row: Measurement
    reason: str


# ---- reading --------------------------------------------------------------------------------------


class _RowProblem(ValueError):
    """A problem of one row (it becomes a skipped row, never an error of the file)."""


def _where(source: str, index: int, line: int, column: str) -> str:
    return f"{source}: row {index} (line {line}), column {column!r}"


#: Parallelism columns where ``0`` means "not applicable" (real benchmark files write 0 in the MoE
#: columns of dense models, and in the pipeline or attention-DP columns of runs without them).
NOT_APPLICABLE_ZERO = frozenset({"pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size"})


def _int(value: str, where: str, *, required: bool, zero_means_none: bool = False) -> int | None:
    text = value.strip()
    if not text:
        if required:
            raise _RowProblem(f"{where}: a positive integer is required, got an empty value")
        return None
    try:
        number = float(text)
    except ValueError:
        raise _RowProblem(f"{where}: expected a positive integer, got {text!r}") from None
    if zero_means_none and number == 0:
        return None
    if not number.is_integer() or number < 1:
        raise _RowProblem(f"{where}: expected a positive integer, got {text!r}")
    return int(number)


def _positive(value: str, where: str) -> float:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        raise _RowProblem(f"{where}: expected a positive number (milliseconds), got {text!r}") from None
    if not number > 0 or number == float("inf"):
        raise _RowProblem(f"{where}: expected a positive number (milliseconds), got {text!r}")
    return number


_NO_WORKER = Worker(None, None, None, None, None, None, None)


def parse_measurements(text: str, source: str = "measurements") -> list[Measurement]:
    """Parse CSV text: one :class:`Measurement` per data row, in order.

    Only a file that cannot be read as a whole raises :class:`MeasurementsError` (a missing
    column, text that is not CSV). A row with a problem — a value that is not a number, an unknown
    ``mode``, more fields than columns — is kept with ``problem`` naming the row, line and column
    (``resolve`` turns it into a skipped row). ``0`` in ``pp_size``, ``attention_dp_size``,
    ``moe_tp_size`` or ``moe_ep_size`` (and their ``prefill_``/``decode_`` forms) means "not
    applicable", as real benchmark files write it for dense models.
    """
    reader = csv.DictReader(io.StringIO(text))
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise MeasurementsError(f"{source}: not a CSV file: {exc}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise MeasurementsError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(the header has: {', '.join(header) or 'nothing'})"
        )
    rows: list[Measurement] = []
    index = 0
    while True:
        try:
            raw = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise MeasurementsError(f"{source}: line {reader.line_num}: not readable as CSV: {exc}") from None
        rows.append(_parse_row(raw, index, reader.line_num, source))
        index += 1
    return rows


def _parse_row(raw: dict[str, str], index: int, line: int, source: str) -> Measurement:
    def get(column: str) -> str:
        value = raw.get(column)
        return "" if value is None or not isinstance(value, str) else value.strip()

    def where(column: str) -> str:
        return _where(source, index, line, column)

    problems: list[str] = []

    def attempt(fn: Callable[[], object]) -> object:
        try:
            return fn()
        except _RowProblem as exc:
            problems.append(str(exc))
            return None

    if None in raw:
        problems.append(f"{source}: row {index} (line {line}): more fields than the header has columns")
    for column in ("model_path", "system"):
        if not get(column):
            problems.append(f"{where(column)}: must not be empty")
    mode = get("mode").lower()
    if mode not in ("agg", "disagg"):
        problems.append(f"{where('mode')}: expected 'agg' or 'disagg', got {get('mode')!r}")
    isl = attempt(lambda: _int(get("isl"), where("isl"), required=True))
    osl = attempt(lambda: _int(get("osl"), where("osl"), required=True))
    ttft = attempt(lambda: _positive(get("silicon_ttft_ms"), where("silicon_ttft_ms")))
    tpot = attempt(lambda: _positive(get("silicon_tpot_ms"), where("silicon_tpot_ms")))
    requests = attempt(lambda: _int(get("num_requests"), where("num_requests"), required=False))
    arrivals = get("arrivals").lower() or "staggered"
    if arrivals not in ARRIVALS:
        problems.append(
            f"{where('arrivals')}: expected one of {', '.join(ARRIVALS)}, got {get('arrivals')!r}"
        )
        arrivals = "staggered"
    elif arrivals == "waves" and mode == "disagg":
        problems.append(f"{where('arrivals')}: synchronized waves are modelled for agg rows only")

    def column_int(column: str, *, required: bool, zero_means_none: bool = False) -> int | None:
        try:
            return _int(get(column), where(column), required=required, zero_means_none=zero_means_none)
        except _RowProblem as exc:
            problems.append(str(exc))
            return None

    def worker(prefix: str) -> Worker:
        values = {
            f: column_int(prefix + f, required=False, zero_means_none=f in NOT_APPLICABLE_ZERO)
            for f in WORKER_FIELDS
        }
        return Worker(**values)

    agg = prefill = decode = _NO_WORKER
    if mode == "agg":
        agg = worker("")
        for column in ("batch_size", "tp_size"):
            if not get(column):
                column_int(column, required=True)
    elif mode == "disagg":
        prefill, decode = worker("prefill_"), worker("decode_")
    return Measurement(
        index=index,
        line=line,
        model_path=get("model_path"),
        system=get("system"),
        backend=get("backend"),
        backend_version=get("backend_version"),
        precision=get("precision"),
        gemm_quant_mode=get("gemm_quant_mode").lower(),
        moe_quant_mode=get("moe_quant_mode").lower(),
        mode=mode,
        isl=isl if isinstance(isl, int) else 0,
        osl=osl if isinstance(osl, int) else 0,
        agg=agg,
        prefill=prefill,
        decode=decode,
        ttft_ms=ttft if isinstance(ttft, float) else math.nan,
        tpot_ms=tpot if isinstance(tpot, float) else math.nan,
        num_requests=requests if isinstance(requests, int) else None,
        arrivals=arrivals,
        problem="; ".join(problems) or None,
    )


def read_measurements(path: str | Path) -> list[Measurement]:
    """Read a measurements CSV (:func:`parse_measurements`); a file that cannot be read raises
    :class:`MeasurementsError`."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MeasurementsError(f"{p}: not UTF-8 text ({exc})") from None
    except OSError as exc:
        raise MeasurementsError(f"{p}: cannot read: {exc.strerror or exc}") from None
    return parse_measurements(text, str(p))


# ---- mapping onto the estimator -------------------------------------------------------------------


def precisions_for(row: Measurement, model: ModelConfig) -> Precisions | str:
    """The row's formats, or the reason they cannot be mapped."""
    gemm = QUANT_MODES.get(row.gemm_quant_mode)
    if gemm is None:
        return f"unknown gemm_quant_mode {row.gemm_quant_mode!r} (known: {', '.join(k for k in QUANT_MODES if k)})"
    moe_mode = row.moe_quant_mode if row.moe_quant_mode else row.gemm_quant_mode
    experts = QUANT_MODES.get(moe_mode)
    if experts is None:
        return (
            f"unknown moe_quant_mode {row.moe_quant_mode!r} (known: {', '.join(k for k in QUANT_MODES if k)})"
        )
    weights, activations = gemm
    if weights is Precision.FP32:
        kv = Precision.FP32  # an unquantized FP32 model keeps its KV cache in FP32 (vLLM's "auto")
    else:
        quantized = weights not in (Precision.BF16, Precision.FP16)
        kv = Precision.FP8 if quantized else Precision.BF16
    expert_weights = experts[0] if model.moe is not None else None
    return Precisions(weights=weights, kv_cache=kv, activations=activations, experts=expert_weights)


def _parallel(model: ModelConfig, w: Worker, what: str) -> Parallel | str:
    tp = w.tp_size or 1
    if (w.pp_size or 1) > 1:
        return f"{what}pipeline parallelism (pp_size={w.pp_size}) is not modelled"
    if model.moe is None:
        dp = w.attention_dp_size or 1
    else:
        moe_devices = (w.moe_tp_size or 1) * (w.moe_ep_size or 1)
        if w.attention_dp_size:
            dp = w.attention_dp_size
        elif moe_devices >= tp and moe_devices % tp == 0:
            dp = moe_devices // tp  # vLLM-style data parallelism under a wider MoE group
        else:
            dp = 1
        if moe_devices not in (1, tp * dp):
            return (
                f"{what}inconsistent parallelism: moe_tp_size × moe_ep_size = {moe_devices} devices, "
                f"tp_size × attention_dp_size = {tp * dp}"
            )
    if tp * dp > DEVICES_PER_NODE:
        return (
            f"{what}worker spans {tp * dp} devices (tp {tp} × dp {dp}): multi-node replicas "
            f"(more than {DEVICES_PER_NODE} GPUs per node) are not modelled"
        )
    return Parallel(tp, dp)


@dataclass(frozen=True)
class Lookup:
    """Where a row's model and hardware come from.

    ``model_path``: a path (absolute, or relative to ``base_dir``, the CSV's folder) to a
    Hugging Face ``config.json`` or to a folder that holds one, read with
    ``catalog.hf_config.load_hf_config``; otherwise a model catalog name or Hugging Face id.
    ``system``: an entry of ``hardware`` (a ``--hardware-file``'s entries by name,
    case-insensitive) first, then the hardware catalog (names and aliases).
    """

    base_dir: Path | None = None
    hardware: Mapping[str, HardwareSpec] = field(default_factory=dict)
    get_model: Callable[[str], ModelConfig] = _get_model
    get_hardware: Callable[[str], HardwareSpec] = _get_hardware
    _configs: dict[Path, ModelConfig | str] = field(default_factory=dict, compare=False, repr=False)

    def config_path(self, model_path: str) -> Path | None:
        """The ``config.json`` a path-like ``model_path`` names, or None for a catalog name. A
        path that does not exist is returned as is (the caller reports it)."""
        text = model_path.strip()
        raw = Path(text).expanduser()
        candidates = [raw] if raw.is_absolute() else []
        if not raw.is_absolute() and self.base_dir is not None:
            candidates.append(self.base_dir / raw)
        for c in candidates:
            if c.is_dir():
                return c / "config.json"
            if c.is_file():
                return c
        looks_like_path = text.startswith(("/", "./", "../", "~")) or text.endswith(".json")
        if looks_like_path:
            return candidates[-1] if candidates else raw
        return None

    def model(self, model_path: str) -> tuple[str | None, ModelConfig] | str:
        """(catalog key or None, model) or the reason it cannot be found."""
        path = self.config_path(model_path)
        if path is None:
            try:
                return resolve_model_name(model_path), self.get_model(model_path)
            except (KeyError, ValueError):
                return f"unknown model {model_path!r}: not in the model catalog (nor a path to a config.json)"
        cached = self._configs.get(path)
        if cached is None:
            from hetsched.scheduler.catalog.hf_config import load_hf_config

            if not path.is_file():
                cached = f"model config {str(path)!r} not found (model_path {model_path!r})"
            else:
                try:
                    cached = load_hf_config(path)
                except (OSError, ValueError) as exc:
                    cached = f"model config {str(path)!r}: {exc}"
            self._configs[path] = cached
        return cached if isinstance(cached, str) else (None, cached)

    def hardware_entry(self, system: str) -> tuple[str | None, HardwareSpec] | str:
        """(catalog key or None, hardware) or the reason it cannot be found."""
        key = system.strip().lower()
        for name, hw in self.hardware.items():
            if name.lower() == key:
                return None, hw
        try:
            return resolve_hardware_name(system), self.get_hardware(system)
        except (KeyError, ValueError):
            where = " nor in the hardware file" if self.hardware else ""
            return f"unknown hardware {system!r}: not in the hardware catalog{where}"


def resolve(
    row: Measurement,
    get_model: Callable[[str], ModelConfig] = _get_model,
    get_hardware: Callable[[str], HardwareSpec] = _get_hardware,
    lookup: Lookup | None = None,
) -> Plan | Skip:
    """Map a row onto the estimator, or say why it cannot be predicted (a row with a
    ``problem`` is skipped with it)."""
    if row.problem:
        return Skip(row, row.problem)
    lk = lookup or Lookup(get_model=get_model, get_hardware=get_hardware)
    found = lk.model(row.model_path)
    if isinstance(found, str):
        return Skip(row, found)
    model_key, model = found
    entry = lk.hardware_entry(row.system)
    if isinstance(entry, str):
        return Skip(row, entry)
    hw_key, hardware = entry
    prec = precisions_for(row, model)
    if isinstance(prec, str):
        return Skip(row, prec)
    model_name = model_key or model.name
    hardware_name = hw_key or hardware.name
    if row.mode == "agg":
        par = _parallel(model, row.agg, "")
        if isinstance(par, str):
            return Skip(row, par)
        assert row.agg.batch_size is not None
        return Plan(
            row=row,
            model_key=model_name,
            model=model,
            hardware_key=hardware_name,
            hardware=hardware,
            precisions=prec,
            disaggregated=False,
            parallel=par,
            concurrency=row.agg.batch_size * par.dp,
        )
    p, d = row.prefill, row.decode
    if not (p.batch_size and p.num_workers and d.batch_size and d.num_workers):
        return Skip(
            row,
            "disaggregated row without prefill/decode batch sizes or worker counts: its concurrency is unknown",
        )
    if not (p.tp_size and d.tp_size):
        return Skip(row, "disaggregated row without prefill_tp_size/decode_tp_size")
    ppar = _parallel(model, p, "prefill worker: ")
    if isinstance(ppar, str):
        return Skip(row, ppar)
    dpar = _parallel(model, d, "decode worker: ")
    if isinstance(dpar, str):
        return Skip(row, dpar)
    decode_batch = d.batch_size * dpar.dp
    return Plan(
        row=row,
        model_key=model_name,
        model=model,
        hardware_key=hardware_name,
        hardware=hardware,
        precisions=prec,
        disaggregated=True,
        parallel=dpar,
        concurrency=decode_batch * d.num_workers,
        prefill_parallel=ppar,
        prefill_batch=p.batch_size * ppar.dp,
        decode_batch=decode_batch,
        prefill_workers=p.num_workers,
        decode_workers=d.num_workers,
    )


def resolve_all(rows: Iterable[Measurement], lookup: Lookup | None = None) -> list[Plan | Skip]:
    lk = lookup or Lookup()
    return [resolve(r, lookup=lk) for r in rows]


def kv_transfer_bandwidth(plan: Plan, prefill_hw: HardwareSpec, decode_hw: HardwareSpec) -> float:
    """Bytes/s between a prefill and a decode worker: each device's NIC (RDMA, e.g. NIXL), over the
    smaller of the two workers."""
    assert plan.prefill_parallel is not None
    devices = min(plan.prefill_parallel.devices, plan.parallel.devices)
    return float(devices * min(prefill_hw.network_bandwidth, decode_hw.network_bandwidth))


def predict(
    plan: Plan,
    efficiency: Callable[[HardwareSpec], Efficiency],
    warmup_fraction: float = BENCHMARK_WARMUP_FRACTION,
) -> ServingPrediction:
    """Predict a row with the public serving formulas (what the planner uses)."""
    hw = plan.hardware
    eff = efficiency(hw)
    warmup_fraction = plan.warmup_fraction(warmup_fraction)
    if not plan.disaggregated:
        return predict_colocated(
            plan.model,
            hw,
            plan.shape,
            plan.parallel,
            concurrency=plan.concurrency,
            efficiency=eff,
            warmup_fraction=warmup_fraction,
            arrivals=plan.row.arrivals,
        )
    assert plan.prefill_parallel is not None
    return predict_disaggregated(
        plan.model,
        hw,
        hw,
        plan.shape,
        prefill=plan.prefill_parallel,
        decode=plan.parallel,
        prefill_batch=plan.prefill_batch,
        decode_batch=plan.decode_batch,
        kv_transfer_bandwidth=kv_transfer_bandwidth(plan, hw, hw),
        prefill_efficiency=eff,
        decode_efficiency=eff,
        prefill_workers=plan.prefill_workers,
        concurrency=plan.concurrency,
        warmup_fraction=warmup_fraction,
    )


def architecture_key(model: ModelConfig) -> str:
    """Models with identical shapes (DeepSeek-V3 and -R1; a checkpoint and its FP8 re-release)
    share this key: leave-one-group-out must hold them out together."""
    shape = model.model_dump(mode="json", exclude={"name", "hf_id", "source", "max_position_embeddings"})
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def group_labels(plans: Sequence[Plan]) -> dict[str, str]:
    """Architecture key → readable label (the catalog keys sharing it, joined by '=')."""
    names: dict[str, set[str]] = {}
    for p in plans:
        names.setdefault(architecture_key(p.model), set()).add(p.model_key)
    return {k: "=".join(sorted(v)) for k, v in names.items()}


__all__ = [
    "BENCHMARK_WARMUP_FRACTION",
    "DEVICES_PER_NODE",
    "NOT_APPLICABLE_ZERO",
    "QUANT_MODES",
    "Lookup",
    "Measurement",
    "MeasurementsError",
    "Plan",
    "Skip",
    "Worker",
    "architecture_key",
    "group_labels",
    "kv_transfer_bandwidth",
    "parse_measurements",
    "precisions_for",
    "predict",
    "read_measurements",
    "resolve",
    "resolve_all",
]
