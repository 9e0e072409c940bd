"""Which number format the towers run in, chosen once per model: fp32, bf16, fp16 or int8.

    auto  fp16 on CUDA; bf16 on a CPU with bf16 matrix units (Intel AMX, or AVX-512 BF16), read from the
          CPU's own flags, never guessed from a model's name; fp32 on MPS (bf16 is slower there) and on
          every other CPU
    fp32  float32 weights and arithmetic
    bf16  float32 weights, the towers' matrix products in bfloat16 under torch.autocast (layer norms and
          softmaxes stay float32, as autocast keeps them)
    fp16  float16 weights (CUDA only)
    int8  the linear layers' weights quantised to int8 per channel, activations quantised on the fly
          (PyTorch's dynamic quantisation; CPU only, for CPUs without bf16 units)

Whatever the towers run in, the embeddings leave the model as float32 and
the normalisation, cosine and scaling are float32 (see `scoring`). Each
precision is part of the model's cache key, so embeddings made in one are
never served for another.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from explain.errors import ExplainError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
CACHE_NAMES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16-autocast", "int8": "int8-dynamic"}


@dataclass(frozen=True)
class CpuUnits:
    """What this CPU offers for low-precision matrix products, from its flags."""

    flags: frozenset[str]

    @property
    def bf16(self) -> list[str]:
        return [name for name in ("amx_bf16", "avx512_bf16") if name in self.flags]

    @property
    def int8(self) -> list[str]:
        return [name for name in ("amx_int8", "avx512_vnni", "avx_vnni") if name in self.flags]

    def describe(self) -> str:
        found = self.bf16 + self.int8
        return ", ".join(found) if found else "no bf16 or int8 matrix units"


@functools.cache
def cpu_units() -> CpuUnits:
    """This CPU's flags (Linux's /proc/cpuinfo); elsewhere, oneDNN's own answer for bf16."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("flags"):
                return CpuUnits(frozenset(line.partition(":")[2].split()))
    except OSError:
        pass
    bf16 = platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
    supported = bf16 and bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    return CpuUnits(frozenset({"avx512_bf16"} if supported else set()))


def resolve_precision(requested: str, device: torch.device) -> tuple[str, str]:
    """(the precision to run, why): `auto` decided for this device, or the one asked for if it can run here."""
    if requested not in PRECISIONS:
        raise ExplainError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    kind = device.type
    if requested == "auto":
        if kind == "cuda":
            return "fp16", "auto: fp16 on CUDA"
        if kind == "mps":
            return "fp32", "auto: fp32 on MPS, where bf16 is slower"
        units = cpu_units().bf16
        if units:
            return "bf16", f"auto: bf16, this CPU has {' and '.join(units)}"
        return "fp32", "auto: fp32, this CPU has no bf16 matrix units"
    if requested == "fp16" and kind != "cuda":
        raise ExplainError(f"--precision fp16 needs a CUDA GPU; on this {kind.upper()} use bf16 or fp32")
    if requested == "int8" and kind != "cpu":
        raise ExplainError(f"--precision int8 runs on the CPU only; on {kind.upper()} use fp16 or fp32")
    if requested == "bf16" and kind == "cpu" and not cpu_units().bf16:
        return "bf16", "bf16 as asked; this CPU has no bf16 units, so it may be slower than fp32"
    return requested, f"{requested} as asked"


KEPT_IN_FLOAT = ("embed", "attnpool", "attn_pool")  # parts of layer names that int8 leaves in float


def prepare_module(module: torch.nn.Module, precision: str) -> torch.nn.Module:
    """The model's weights in the format `precision` needs (int8: quantised linear layers)."""
    if precision == "fp16":
        return module.half()
    module = module.float()
    if precision == "int8":
        with warnings.catch_warnings():  # PyTorch marks its eager quantisation API as deprecated, not removed
            warnings.simplefilter("ignore")
            from torch.ao.quantization import quantize_dynamic

            # Plain linear layers only, and none that embeds patches or tokens or pools: code that reads a
            # layer's weight itself (SigLIP 2's patch embedding, open_clip's ResNet attention pool, the value
            # path of a map recipe through a pool, the out-projection of torch's MultiheadAttention, which is
            # a subclass) would find a quantised layer has none. The pools are a sliver of the compute.
            names = {
                name
                for name, layer in module.named_modules()
                if type(layer) is torch.nn.Linear and not any(part in name.lower() for part in KEPT_IN_FLOAT)
            }
            module = quantize_dynamic(module, names, dtype=torch.qint8)
        for layer in module.modules():
            if isinstance(layer, torch.ao.nn.quantized.dynamic.Linear):
                # open_clip asks its text tower's first MLP layer for the weights' dtype to cast inputs to; a
                # quantised layer has no weight tensor, so it answers by this attribute, as open_clip's own
                # int8 layers do.
                layer.int8_original_dtype = torch.float32
    return module


def autocast(precision: str, device: torch.device):
    """The context the towers run in: bf16 autocast for bf16, nothing otherwise."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
