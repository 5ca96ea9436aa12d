"""Which CPUs count as computing bf16 natively, from /proc/cpuinfo texts of the machines seen here."""

from __future__ import annotations

import pytest
import torch

from r1repro import cpu
from r1repro.config import CommonParams
from r1repro.modeling import resolve_dtypes

ICE_LAKE = """processor\t: 0
model name\t: Intel(R) Xeon(R) Processor @ 2.80GHz
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni
"""
EPYC = ICE_LAKE.replace("Intel(R) Xeon(R) Processor @ 2.80GHz", "AMD EPYC 9B14").replace(
    "avx512_vnni", "avx512_vnni avx512_bf16")
SAPPHIRE_RAPIDS = ICE_LAKE.replace("avx512_vnni", "avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8")
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd bf16 sve\n"


@pytest.mark.parametrize(("cpuinfo", "native"), [(ICE_LAKE, False), (EPYC, True), (SAPPHIRE_RAPIDS, True)])
def test_x86_bf16_is_native_only_with_avx512_bf16_or_amx(cpuinfo, native, monkeypatch):
    # oneDNN answers yes for any AVX-512 CPU; the flags must decide, not it
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert cpu.native_bf16_cpu(cpuinfo, machine="x86_64") is native
    assert cpu.cpu_info(cpuinfo)["cpu_flags"]["avx512_bf16"] is (cpuinfo is not ICE_LAKE)


@pytest.mark.parametrize("onednn", [True, False])
def test_without_x86_flags_onednn_decides(onednn, monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    assert cpu.native_bf16_cpu(GRAVITON, machine="aarch64") is onednn
    assert cpu.native_bf16_cpu("", machine="x86_64") is onednn  # no /proc/cpuinfo to read


def test_auto_dtype_is_float32_on_an_avx512_cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    monkeypatch.setattr(cpu, "read_cpuinfo", lambda: ICE_LAKE)
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    common = resolve_dtypes(CommonParams(device="cpu", dtype="auto", inference_dtype="auto"))
    assert (common.dtype, common.inference_dtype) == ("float32", "float32")
    monkeypatch.setattr(cpu, "read_cpuinfo", lambda: EPYC)
    common = resolve_dtypes(CommonParams(device="cpu", dtype="auto", inference_dtype="auto"))
    assert (common.dtype, common.inference_dtype) == ("bfloat16", "bfloat16")
