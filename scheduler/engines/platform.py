"""What a pool offers an engine (its *platform*: kind, vendor, architecture, build, device resource,
RDMA, host link), the pool-level overrides (:class:`PoolServing`), the workload's engine choice
(:class:`ServingChoice`), and which image a phase runs on a pool (:func:`image_for`).

Pure. A pool's platform comes from its hardware entry (``kind``, ``vendor``, ``architecture``,
``hostBandwidth``) and its ``serving`` overrides (pool file, AcceleratorProfile). A GPU whose
hardware names no vendor is taken as NVIDIA, as hetsched did before vendors mattered.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated

from hetsched.scheduler.catalog.hardware import DeviceKind, HardwareSpec
from hetsched.scheduler.engines.detect import engine_of_images
from hetsched.scheduler.engines.registry import EngineProfile, registry
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

DEFAULT_ENGINE = "vllm"
Image = Annotated[str, Field(min_length=1, max_length=512)]

#: Hardware ``vendor`` spellings → registry vendor keys (GPUs and accelerators; CPUs keep their own).
_VENDOR_ALIASES = {
    "": "nvidia",
    "nvidia": "nvidia",
    "amd": "amd",
    "intel": "intel-gaudi",
    "habana": "intel-gaudi",
    "intel-gaudi": "intel-gaudi",
    "google": "google",
}


_VENDOR_NAMES = {
    "nvidia": "NVIDIA",
    "amd": "AMD",
    "intel": "Intel",
    "intel-gaudi": "Intel Gaudi",
    "google": "Google",
}


class PoolServing(BaseModel):
    """Serving overrides of a pool (pool file ``pools[].serving``, AcceleratorProfile ``spec.serving``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    images: dict[str, Image] = Field(
        default_factory=dict,
        max_length=8,
        description="image per engine (vllm, sglang) on this pool, instead of the registry's build",
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, size(k) >= 1 && size(k) <= 63)",
                    "message": "engine names are 1-63 characters",
                }
            ]
        },
    )
    device_resource: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="extended resource a pod requests per device (default: the vendor's, e.g. amd.com/gpu)",
    )
    rdma: bool = Field(
        default=False,
        description="pods can use RDMA NICs on these nodes (KV transfer: UCX picks its transports; "
        "false: UCX_TLS=tcp)",
    )

    @field_validator("images")
    @classmethod
    def _engine_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not 1 <= len(k) <= 63]
        if bad:
            raise ValueError("engine names are 1-63 characters")
        return v

    @field_validator("device_resource")
    @classmethod
    def _qualified(cls, v: str | None) -> str | None:
        if v is not None and "/" not in v:
            raise ValueError("deviceResource must be an extended resource name like vendor.com/gpu")
        return v


@dataclass(frozen=True, slots=True)
class Platform:
    """What a pool offers an engine."""

    kind: str  # gpu | cpu | accelerator
    vendor: str  # registry vendor key (nvidia, amd, ...) for devices; the CPU vendor for CPUs
    architecture: str  # "" when unknown
    build: str  # cuda | rocm | cpu | gaudi | tpu | "" (no known build)
    device_resource: str | None  # None on CPUs (and on devices of an unknown vendor without override)
    rdma: bool
    host_bandwidth: float  # bytes/s device ↔ host, per direction (CPUs: their memory is the host's)
    images: Mapping[str, str] = field(default_factory=dict)  # pool overrides per engine
    hardware: str = ""  # the hardware entry's name (one device type: one memory layout)

    @property
    def is_cpu(self) -> bool:
        return self.kind == DeviceKind.CPU.value

    def describe(self) -> str:
        """``NVIDIA ampere GPU``, ``AMD cdna3 GPU``, ``Intel CPU``."""
        vendor = _VENDOR_NAMES.get(self.vendor, self.vendor or "unknown-vendor")
        if self.is_cpu:
            return f"{vendor} CPU"
        arch = f" {self.architecture}" if self.architecture else ""
        return f"{vendor}{arch} {self.kind.upper() if self.kind == 'gpu' else self.kind}"


def platform_of(hardware: HardwareSpec, serving: PoolServing | None = None) -> Platform:
    """The platform of a pool of ``hardware`` with its ``serving`` overrides."""
    serving = serving or PoolServing()
    kind = hardware.kind.value
    if kind == DeviceKind.CPU.value:
        return Platform(
            kind=kind,
            vendor=hardware.vendor.strip().lower(),
            architecture=hardware.architecture,
            build="cpu",
            device_resource=None,
            rdma=serving.rdma,
            host_bandwidth=hardware.host_bandwidth,
            images=dict(serving.images),
            hardware=hardware.name,
        )
    vendor = _VENDOR_ALIASES.get(hardware.vendor.strip().lower(), hardware.vendor.strip().lower())
    known = registry().vendors.get(vendor)
    return Platform(
        kind=kind,
        vendor=vendor,
        architecture=hardware.architecture,
        build=known.build if known else "",
        device_resource=serving.device_resource or (known.device_resource if known else None),
        rdma=serving.rdma,
        host_bandwidth=hardware.host_bandwidth,
        images=dict(serving.images),
        hardware=hardware.name,
    )


@dataclass(frozen=True, slots=True)
class ServingChoice:
    """The workload's serving engine and what it pins: from ``spec.serving`` (see request.py)."""

    engine: str = DEFAULT_ENGINE  # a registry key, or a detected engine without a profile (trtllm)
    connector: str | None = None  # KV connector (None: the engine's default)
    experimental_pairs: bool = False  # spec.serving.allowExperimentalPairs
    # Images the user pinned per phase (None: the pool's / registry's image for the pool's build).
    prefill_image: str | None = None
    decode_image: str | None = None
    colocated_image: str | None = None

    @property
    def profile(self) -> EngineProfile | None:
        return registry().engines.get(self.engine)

    def image(self, phase: str) -> tuple[str | None, str]:
        """The user's image for ``phase`` (decode defaults to prefill, colocated to decode) and the
        field it comes from."""
        chain = {"prefill": ("prefill",), "decode": ("decode", "prefill")}.get(
            phase, ("colocated", "decode", "prefill")
        )
        for name in chain:
            image = getattr(self, f"{name}_image")
            if image is not None:
                return image, f"spec.serving.{name}.image"
        return None, f"spec.serving.{phase}.image"


def choose_engine(explicit: str | None, images: list[str | None]) -> str:
    """The workload's engine: ``spec.serving.engine``, else the one its images name, else vLLM."""
    if explicit:
        return explicit
    return engine_of_images([i for i in images if i]) or DEFAULT_ENGINE


def build_of_image(image: str) -> tuple[str, str] | None:
    """(engine, build) of an image whose repository is a registry build's (tags ignored), else None:
    ``vllm/vllm-openai:v0.11.0`` → (vllm, cuda), ``vllm/vllm-openai-cpu:v0.20.0`` → (vllm, cpu)."""
    repo = _repository(image)
    for key, engine in registry().engines.items():
        for build_name, build in engine.builds.items():
            if _repository(build.image) == repo and _tag_family(build.image) == _tag_family(image):
                return key, build_name
    return None


def _repository(image: str) -> str:
    ref = image.strip().lower().split("@", 1)[0]
    slash, colon = ref.rfind("/"), ref.rfind(":")
    repo = ref[:colon] if colon > slash else ref
    return repo.removeprefix("docker.io/").removeprefix("library/")


def _tag_family(image: str) -> str:
    """What tells builds of one repository apart: SGLang's ROCm tags end in ``-rocm…``."""
    ref = image.strip().lower().split("@", 1)[0]
    slash, colon = ref.rfind("/"), ref.rfind(":")
    tag = ref[colon + 1 :] if colon > slash else ""
    return "rocm" if "rocm" in tag else ("xeon" if "xeon" in tag else "")


@dataclass(frozen=True, slots=True)
class ImageChoice:
    image: str | None  # None: no image for this phase on this pool
    source: str  # where it comes from, or why there is none


def image_for(choice: ServingChoice, phase: str, platform: Platform) -> ImageChoice:
    """The image ``phase`` runs on a pool of ``platform``: the workload's own (``spec.serving``), else
    the pool's override for the engine, else the registry's build; None with the reason when the
    engine has no build there, or the workload's image is a build for other hardware."""
    pinned, field = choice.image(phase)
    if not platform.is_cpu and platform.device_resource is None:
        return ImageChoice(
            None,
            f"the pool's {platform.kind}s are of vendor {platform.vendor!r}, whose device resource hetsched "
            "does not know: set serving.deviceResource on the pool (pool file or AcceleratorProfile)",
        )
    if pinned is not None:
        known = build_of_image(pinned)
        if known is not None and known[1] != platform.build:
            wanted = _build_name(platform.build)
            return ImageChoice(
                None,
                f"{field} {pinned} is {registry().engine(known[0]).name}'s {_build_name(known[1])} build; "
                f"a pool of {platform.describe()}s needs its {wanted} build: leave the image out (each "
                "pool gets the registry's build) or name one for this hardware",
            )
        return ImageChoice(pinned, field)
    if choice.engine in platform.images:
        return ImageChoice(platform.images[choice.engine], f"the pool's serving.images.{choice.engine}")
    profile = choice.profile
    if profile is None:
        return ImageChoice(
            None,
            f"engine {choice.engine} has no profile in hetsched's registry: name the image in {field}",
        )
    build = profile.builds.get(platform.build)
    if build is None:
        return ImageChoice(
            None,
            f"{profile.name} has no {_build_name(platform.build)} build in hetsched's registry for a pool "
            f"of {platform.describe()}s: set serving.images.{choice.engine} on the pool or {field}",
        )
    return ImageChoice(build.image, f"registry: {profile.name} {platform.build} build")


def _build_name(build: str) -> str:
    return {"cuda": "CUDA", "rocm": "ROCm", "cpu": "CPU", "gaudi": "Gaudi", "tpu": "TPU"}.get(
        build, build or "unknown"
    )
