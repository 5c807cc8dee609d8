"""GEMM cost terms: a grid of fewer tiles than SMs filled by smaller tiles, and operand rows off the
128-byte lines (a lower math rate and a lower streaming rate)."""

import math

import numpy as np
import pytest

from perfmodel.hw.loader import load_gpu
from perfmodel.hw.spec import Dtype
from perfmodel.calibration import Mode, OpClass, Profile
from perfmodel.costs.gemm import GemmParams
from perfmodel.costs import GEMM_ALIGN_BYTES, op_cost
from perfmodel.costs.gemm import gemm_misaligned
from perfmodel.errors import ProfileError
from perfmodel.ops import Gemm

H100 = load_gpu("h100-sxm-80gb")
PEAK_FLOPS = H100.flops_for(Dtype.BF16)


def _prof(p: GemmParams) -> Profile:
    return Profile(H100.name, Mode.CALIBRATED, {OpClass.GEMM: p})


def test_under_filled_grid_runs_one_wave_of_smaller_tiles_at_the_fill_rate():
    # 1024 x 1024 in 128 x 256 tiles: 32 tiles on 132 SMs
    tiles = 8 * 4
    base = GemmParams(tile_m=128, tile_n=256, wave_quant=1.0, tile_overhead_s=1e-6)
    fill = GemmParams(tile_m=128, tile_n=256, wave_quant=1.0, tile_overhead_s=1e-6, fill_tile_eff=0.7)
    op = Gemm(m=1024, n=1024, k=4096)
    fl = 2.0 * 1024 * 1024 * 4096
    want = fl / 0.7 ** math.log2(H100.sm_count / tiles) / PEAK_FLOPS + 1e-6
    assert op_cost(op, H100, _prof(fill)).compute_s == pytest.approx(want)
    # strict wave quantization charges the idle SMs: one full wave of 128 x 256 tiles
    strict = fl * H100.sm_count / tiles / PEAK_FLOPS + 1e-6
    assert op_cost(op, H100, _prof(base)).compute_s == pytest.approx(strict)
    assert want < strict


def test_fill_rate_leaves_grids_of_at_least_one_wave_alone():
    base = GemmParams(tile_m=128, tile_n=256, wave_quant=0.5, tile_overhead_s=1e-6, small_tile_eff=0.9)
    fill = GemmParams(
        tile_m=128, tile_n=256, wave_quant=0.5, tile_overhead_s=1e-6, small_tile_eff=0.9, fill_tile_eff=0.6
    )
    ms = np.array([4096.0, 16384.0])  # 32 x 16 and 128 x 16 tiles
    op = Gemm(m=ms, n=4096, k=4096)
    assert np.allclose(op_cost(op, H100, _prof(fill)).compute_s, op_cost(op, H100, _prof(base)).compute_s)
    # fewer tiles: more halvings of the tile area, each at the fill rate
    small = Gemm(m=np.array([2048.0, 512.0]), n=1024, k=4096)
    per_flop = op_cost(small, H100, _prof(fill)).compute_s / (2.0 * small.m * 1024 * 4096)
    assert per_flop[1] > per_flop[0]


def test_rows_off_the_128_byte_lines_are_found_per_operand_format():
    ns = np.array([1000.0, 1024.0, 4096.0, 1088.0])
    assert gemm_misaligned(Gemm(m=16, n=ns, k=4096)).tolist() == [True, False, False, False]
    assert gemm_misaligned(Gemm(m=16, n=4096, k=4000))  # K rows of 8000 bytes
    # 1088 bf16 elements are 2176 bytes (17 lines); 1088 fp8 weights are 8.5 lines
    assert gemm_misaligned(Gemm(m=16, n=1088, k=4096, b_dtype=Dtype.FP8))
    assert GEMM_ALIGN_BYTES == 128


def test_misaligned_rows_compute_at_the_misaligned_rate():
    p = GemmParams(misaligned_eff=0.8)
    ns = np.array([1000.0, 1024.0])
    op = Gemm(m=8192, n=ns, k=8192)
    c = op_cost(op, H100, _prof(p)).compute_s
    assert c == pytest.approx(2.0 * 8192 * ns * 8192 / PEAK_FLOPS / np.array([0.8, 1.0]))
    # off (0): the same rate for both
    off = op_cost(op, H100, _prof(GemmParams())).compute_s
    assert off == pytest.approx(2.0 * 8192 * ns * 8192 / PEAK_FLOPS)
    # a scalar op stays a scalar
    assert isinstance(op_cost(Gemm(m=64, n=1000, k=1000), H100, _prof(p)).compute_s, float)


def test_misaligned_rows_stream_their_bytes_at_the_misaligned_memory_rate():
    p = GemmParams(memory_eff=0.9, misaligned_memory_eff=0.8)
    ns = np.array([1000.0, 1024.0])
    op = Gemm(m=1, n=ns, k=8192)  # weight streaming: memory-bound
    by = 2.0 * (8192 + 8192 * ns + ns)
    m = op_cost(op, H100, _prof(p)).memory_s
    assert m == pytest.approx(by / (H100.hbm_bytes_per_s * 0.9 * np.array([0.8, 1.0])))
    assert m[0] / by[0] > m[1] / by[1]  # slower per byte only where the rows are off the lines
    # the math rate is untouched, and off (0) both rows stream at memory_eff
    assert op_cost(op, H100, _prof(p)).compute_s == pytest.approx(
        op_cost(op, H100, _prof(GemmParams())).compute_s
    )
    off = op_cost(op, H100, _prof(GemmParams(memory_eff=0.9))).memory_s
    assert off == pytest.approx(by / (H100.hbm_bytes_per_s * 0.9))
    assert isinstance(op_cost(Gemm(m=1, n=1000, k=1000), H100, _prof(p)).memory_s, float)
    # the peak model has no such term
    assert op_cost(op, H100, Profile(H100.name, Mode.PEAK)).memory_s == pytest.approx(
        by / H100.hbm_bytes_per_s
    )


@pytest.mark.parametrize("name", ["fill_tile_eff", "misaligned_eff", "misaligned_memory_eff"])
@pytest.mark.parametrize("bad", [-0.1, 1.2, float("nan")])
def test_gemm_rate_factors_must_lie_in_0_1(name, bad):
    with pytest.raises(ProfileError, match=name):
        GemmParams.from_dict({name: bad}, "gemm")
    assert getattr(GemmParams.from_dict({name: 0.7}, "gemm"), name) == 0.7


def test_split_k_is_taken_for_few_rows_of_square_aligned_weights_only():
    from perfmodel.costs.gemm import SPLIT_K_MIN_K, gemm_split_k

    p = GemmParams(split_k_rows=32, split_k_s=2e-6)
    ms = np.array([1.0, 32.0, 33.0, 256.0])
    assert gemm_split_k(Gemm(m=ms, n=4096, k=4096), p).tolist() == [True, True, False, False]
    assert gemm_split_k(Gemm(m=8, n=10240, k=8192), p)  # K/N 0.8
    assert not gemm_split_k(Gemm(m=8, n=4096, k=14336), p)  # a long K: the split pays for itself
    assert not gemm_split_k(Gemm(m=8, n=14336, k=4096), p)  # a short K
    assert not gemm_split_k(Gemm(m=8, n=6000, k=6000), p)  # rows off the 128-byte lines
    assert not gemm_split_k(Gemm(m=8, n=2048, k=2048), p)  # K below the smallest split
    assert SPLIT_K_MIN_K > 2048
    assert not gemm_split_k(Gemm(m=8, n=4096, k=4096), GemmParams())  # off


def test_split_k_adds_its_seconds_as_latency_where_taken():
    p = GemmParams(memory_eff=0.9, latency_s=3e-6, split_k_rows=16, split_k_s=2e-6)
    base = GemmParams(memory_eff=0.9, latency_s=3e-6)
    ms = np.array([1.0, 16.0, 64.0])
    op = Gemm(m=ms, n=4096, k=4096)
    c, b = op_cost(op, H100, _prof(p)), op_cost(op, H100, _prof(base))
    assert c.latency_s == pytest.approx([5e-6, 5e-6, 3e-6])
    assert c.total_s - b.total_s == pytest.approx([2e-6, 2e-6, 0.0])
    # a scalar op stays a scalar; without seconds the rule changes nothing
    assert isinstance(op_cost(Gemm(m=8, n=4096, k=4096), H100, _prof(p)).latency_s, float)
    free = GemmParams(memory_eff=0.9, latency_s=3e-6, split_k_rows=16)
    assert op_cost(op, H100, _prof(free)).total_s == pytest.approx(b.total_s)
