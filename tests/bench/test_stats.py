import math

import numpy as np
import pytest

from bench.stats import (
    ERROR,
    OK,
    TIMEOUT,
    LevelStats,
    saturation_throughput,
    stats_frame,
    summarize,
)

MS = 1_000_000


def _level(level, p95, thr, err=0.0, ok=10):
    return LevelStats(level, 10, ok, 0, 0, p95, p95, p95, p95, p95, p95, thr, err, 1.0)


def test_summarize_100_requests_of_1_to_100_ms_gives_the_hand_computed_figures():
    # 100 requests intended at 0..99 ms with latencies 1..100 ms, all ok, window [0, 100 ms).
    intended = np.arange(100, dtype=np.int64) * MS
    latency = np.arange(1, 101, dtype=np.float64)
    end = intended + (latency * MS).astype(np.int64)
    status = np.full(100, OK, dtype=np.int8)
    s = summarize(4, intended, end, latency, status, 0, 100 * MS)
    assert (s.count, s.ok, s.errors, s.timeouts) == (100, 100, 0, 0)
    assert s.mean_ms == pytest.approx(50.5)
    assert s.p50_ms == pytest.approx(50.5)
    assert s.p90_ms == pytest.approx(90.1)
    assert s.p95_ms == pytest.approx(95.05)
    assert s.p99_ms == pytest.approx(99.01)
    assert s.max_ms == 100.0
    assert s.window_s == pytest.approx(0.1)
    # completions inside [0, 100 ms]: request i ends at 2i+1 ms -> i <= 49.5 -> 50 requests
    assert s.throughput_rps == pytest.approx(50 / 0.1)
    assert s.error_rate == 0.0
    assert s.level == 4.0


def test_summarize_excludes_warmup_and_counts_errors_and_timeouts():
    intended = np.array([-5, 0, 1, 2, 3, 50], dtype=np.int64) * MS  # -5 warm-up, 50 after window
    latency = np.array([1.0, 2.0, 3.0, 0.5, 400.0, 1.0])
    end = intended + (latency * MS).astype(np.int64)
    status = np.array([OK, OK, OK, ERROR, TIMEOUT, OK], dtype=np.int8)
    s = summarize(1, intended, end, latency, status, 0, 10 * MS)
    assert (s.count, s.ok, s.errors, s.timeouts) == (4, 2, 1, 1)
    assert s.error_rate == pytest.approx(0.5)
    # latency stats over ok + timeout (2, 3, 400), the fast error (0.5 ms) excluded
    assert s.max_ms == 400.0
    assert s.p50_ms == pytest.approx(3.0)
    assert s.mean_ms == pytest.approx((2 + 3 + 400) / 3)
    # ok completions inside [0, 10 ms]: the warm-up one ending at -4 ms is outside; ends 2, 4 ms
    assert s.throughput_rps == pytest.approx(2 / 0.01)


def test_summarize_empty_window_gives_nan_not_error():
    z = np.zeros(0)
    s = summarize(1, z, z, z, z, 0, 10)
    assert s.count == 0 and math.isnan(s.p50_ms) and math.isnan(s.error_rate)


def test_summarize_all_failed_has_nan_latency_and_full_error_rate():
    intended = np.array([0, 1], dtype=np.int64)
    s = summarize(1, intended, intended + 1, np.array([0.1, 0.1]),
                  np.array([ERROR, ERROR], dtype=np.int8), 0, 10)
    assert math.isnan(s.p95_ms) and s.error_rate == 1.0 and s.throughput_rps == 0.0


def test_summarize_rejects_misaligned_arrays():
    with pytest.raises(ValueError, match="differ in length"):
        summarize(1, np.zeros(2), np.zeros(3), np.zeros(2), np.zeros(2), 0, 1)


def test_saturation_throughput_is_best_level_meeting_slo():
    levels = [_level(1, 10, 100), _level(2, 20, 180), _level(4, 45, 300), _level(8, 120, 320)]
    assert saturation_throughput(levels, slo_ms=50) == 300
    assert saturation_throughput(levels, slo_ms=15) == 100
    assert saturation_throughput(levels, slo_ms=5) is None


def test_saturation_throughput_ignores_failing_levels():
    levels = [_level(1, 10, 100), _level(2, 12, 500, err=0.5)]
    assert saturation_throughput(levels, slo_ms=50) == 100
    assert saturation_throughput(levels, slo_ms=50, max_error_rate=0.6) == 500
    with pytest.raises(ValueError, match="slo_ms"):
        saturation_throughput(levels, slo_ms=0)


def test_stats_frame_has_one_row_per_level():
    f = stats_frame([_level(1, 10, 100), _level(2, 20, 150)])
    assert list(f["level"]) == [1.0, 2.0] and "p95_ms" in f.columns
