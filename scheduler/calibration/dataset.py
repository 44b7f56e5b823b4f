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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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
    ttft_ms: float
    tpot_ms: float


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

    @property
    def shape(self) -> RequestShape:
        """The measured requests: ``isl`` prompt tokens (no cached prefix), ``osl`` output tokens."""
        return RequestShape(self.row.isl, 0, self.row.osl, self.precisions)

    def setup(self) -> ColocatedSetup | DisaggregatedSetup:
        """The serving model's efficiency-independent part of the row's prediction (``predict``
        completes it with the efficiencies; the fit evaluates many at once)."""
        if not self.disaggregated:
            return colocated_setup(
                self.model, self.hardware, self.shape, self.parallel, concurrency=self.concurrency
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


def _where(source: str, index: int, line: int, column: str) -> str:
    return f"{source}: row {index} (line {line}), column {column!r}"


def _int(value: str, where: str, *, required: bool) -> int | None:
    text = value.strip()
    if not text:
        if required:
            raise MeasurementsError(f"{where}: a positive integer is required, got an empty value")
        return None
    try:
        number = float(text)
    except ValueError:
        raise MeasurementsError(f"{where}: expected a positive integer, got {text!r}") from None
    if not number.is_integer() or number < 1:
        raise MeasurementsError(f"{where}: expected a positive integer, got {text!r}")
    return int(number)


def _positive(value: str, where: str) -> float:
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        raise MeasurementsError(f"{where}: expected a positive number (milliseconds), got {text!r}") from None
    if not number > 0 or number == float("inf"):
        raise MeasurementsError(f"{where}: expected a positive number (milliseconds), got {text!r}")
    return number


def parse_measurements(text: str, source: str = "measurements") -> list[Measurement]:
    """Parse and check CSV text; raises :class:`MeasurementsError` naming the row and column."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise MeasurementsError(
            f"{source}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(the header has: {', '.join(header) or 'nothing'})"
        )
    rows: list[Measurement] = []
    for index, raw in enumerate(reader):
        line = reader.line_num
        if None in raw:
            raise MeasurementsError(
                f"{source}: row {index} (line {line}): more fields than the header has columns"
            )

        def get(column: str, raw: dict[str, str] = raw) -> str:
            value = raw.get(column)
            return "" if value is None else value.strip()

        def where(column: str, index: int = index, line: int = line) -> str:
            return _where(source, index, line, column)

        for column in ("model_path", "system"):
            if not get(column):
                raise MeasurementsError(f"{where(column)}: must not be empty")
        mode = get("mode").lower()
        if mode not in ("agg", "disagg"):
            raise MeasurementsError(f"{where('mode')}: expected 'agg' or 'disagg', got {get('mode')!r}")
        isl = _int(get("isl"), where("isl"), required=True)
        osl = _int(get("osl"), where("osl"), required=True)
        assert isl is not None and osl is not None

        def worker(prefix: str) -> Worker:
            values = {f: _int(get(prefix + f), where(prefix + f), required=False) for f in WORKER_FIELDS}
            return Worker(**values)

        agg = worker("")
        if mode == "agg":
            for column in ("batch_size", "tp_size"):
                _int(get(column), where(column), required=True)
        rows.append(
            Measurement(
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
                isl=isl,
                osl=osl,
                agg=agg,
                prefill=worker("prefill_"),
                decode=worker("decode_"),
                ttft_ms=_positive(get("silicon_ttft_ms"), where("silicon_ttft_ms")),
                tpot_ms=_positive(get("silicon_tpot_ms"), where("silicon_tpot_ms")),
            )
        )
    return rows


def read_measurements(path: str | Path) -> list[Measurement]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MeasurementsError(f"{p}: not UTF-8 text ({exc})") from None
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


def resolve(
    row: Measurement,
    get_model: Callable[[str], ModelConfig] = _get_model,
    get_hardware: Callable[[str], HardwareSpec] = _get_hardware,
) -> Plan | Skip:
    """Map a row onto the estimator, or say why it cannot be predicted."""
    model_key = resolve_model_name(row.model_path)
    try:
        model = get_model(row.model_path)
    except (KeyError, ValueError):
        return Skip(row, f"unknown model {row.model_path!r}: not in the model catalog")
    hw_key = resolve_hardware_name(row.system)
    try:
        hardware = get_hardware(row.system)
    except (KeyError, ValueError):
        return Skip(row, f"unknown hardware {row.system!r}: not in the hardware catalog")
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


def resolve_all(rows: Iterable[Measurement]) -> list[Plan | Skip]:
    return [resolve(r) for r in rows]


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
    if not plan.disaggregated:
        return predict_colocated(
            plan.model,
            hw,
            plan.shape,
            plan.parallel,
            concurrency=plan.concurrency,
            efficiency=eff,
            warmup_fraction=warmup_fraction,
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
    "QUANT_MODES",
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
