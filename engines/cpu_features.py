"""What the CPU can do for INT8 inference: its integer dot-product instructions.

Where they exist (x86 VNNI or AMX, Arm dotprod), ONNX Runtime's INT8 kernels
beat its FP32 ones (8.2 against 13.9 CPU ms per frame on a Xeon with AMX,
python -m tools.benchmark_engines --candidates, 2026-12-03). Where they do
not, its x86 kernels multiply unsigned by signed bytes with VPMADDUBSW,
whose 16-bit sums saturate (ONNX Runtime's quantization guide says so): on
an AVX2-only AMD EPYC the default INT8 graph's embeddings fell to cosine
0.84 of FP32's (tests/engines/test_engines.py, 2026-12-04), far from the
0.97 a head is judged to keep its figures at. So the INT8 graph runs only
on a CPU that has them.
"""

from __future__ import annotations

INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})
INT8_REFUSAL = ("onnxruntime int8 needs a CPU with integer dot products (VNNI, AMX or Arm dotprod); this one has "
                "none, and ONNX Runtime's INT8 kernels here saturate (embeddings at cosine 0.84 of FP32's): run "
                "engine.precision fp32")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 ``flags``, Arm ``Features``); empty when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_int8_dot(flags: set[str] | None = None) -> bool:
    """The CPU (``flags``, else this machine's) has integer dot-product instructions."""
    return bool((cpu_flags() if flags is None else flags) & INT8_DOT_FLAGS)


def int8_refusal(flags: set[str] | None = None) -> str | None:
    """Why ONNX Runtime's INT8 graph must not run on this CPU (``flags``, else this machine's); None if it may."""
    return None if has_int8_dot(flags) else INT8_REFUSAL
