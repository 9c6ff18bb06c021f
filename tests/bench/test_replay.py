"""The replay runner on the fake clock against a tiny real HTTP session server: latency from the
intended time, one click of a session at a time, errors counted, the equality check."""

import math
import re

import pandas as pd
import pytest

from bench.clock import FakeClock
from bench.replay import ReplaySettings, replay, wire_id
from bench.replay_check import check
from bench.replay_client import ClickAnswer, SessionClient, parse_server_timing
from bench.replay_schedule import schedule
from bench.replay_summary import format_summary, replay_metrics, summarize_replay
from bench.replay_trace import Trace, TraceSession
from bench.stats import ERROR, OK, TIMEOUT
from tests.bench.replay_support import ENDPOINT_MS, FakeSessionServer, direct_invoker


def trace_of(*sessions):
    return Trace("t", tuple(TraceSession(f"s{i}", tuple(items)) for i, items in enumerate(sessions)))


def run(server, trace, clock, *, rate=1.0, think_s=0.1, **settings):
    plan = schedule(trace, "poisson", rate=rate, think_s=think_s, seed=0)
    with_client = SessionClient(server.url, timeout_s=5.0)
    try:
        return replay(with_client, trace, plan, ReplaySettings(**settings), clock=clock)
    finally:
        with_client.close()


def test_a_stalled_first_click_delays_the_next_ones_and_they_count_from_their_intended_time():
    clock = FakeClock()
    stall = FakeSessionServer(clock, advance_s=lambda sid, pos: 0.5 if pos == 0 else 0.0)
    with stall as server:
        res = run(server, trace_of([11, 12, 13]), clock, think_s=0.1)
    assert [r.intended_ns for r in res.records] == [0, 100_000_000, 200_000_000]
    assert [r.sent_ns for r in res.records] == [0, 500_000_000, 500_000_000]
    assert [r.e2e_ms for r in res.records] == [500.0, 400.0, 300.0]
    assert [r.queued for r in res.records] == [False, True, True]
    assert res.level.late_starts == 0
    summary = summarize_replay(res)
    assert (summary.e2e_p50_ms, summary.queued_clicks, summary.errors) == (400.0, 2, 0)


def test_clicks_of_a_session_reach_the_server_in_order_never_two_at_once():
    clock = FakeClock()
    sessions = [[100 * i + j for j in range(1, 6)] for i in range(1, 21)]
    with FakeSessionServer(clock, advance_s=lambda sid, pos: 0.001) as server:
        res = run(server, trace_of(*sessions), clock, rate=1000.0, think_s=0.0)
        log, deleted, overlap = dict(server.log), list(server.deleted), server.overlap
    assert overlap == 0
    assert {sid: items for sid, items in log.items()} == {
        wire_id(res.run_id, f"s{i}"): items for i, items in enumerate(sessions)}
    assert sorted(deleted) == sorted(log) and res.deletes_failed == 0
    assert [r.position for r in res.records[:5]] == [0, 1, 2, 3, 4]
    assert all(r.items and r.outcome == OK for r in res.records)


def test_overhead_is_end_to_end_minus_the_endpoint_time_the_server_reports():
    clock = FakeClock()
    with FakeSessionServer(clock, advance_s=lambda sid, pos: 0.003) as server:
        res = run(server, trace_of([1, 2, 3], [4, 5]), clock, rate=0.01, think_s=1.0)
    s = summarize_replay(res)
    assert (s.e2e_p50_ms, s.endpoint_p50_ms, s.overhead_p50_ms) == pytest.approx((3.0, 2.0, 1.0))
    assert res.records[0].store_ms == 0.25 and res.records[0].server_ms == 3.0
    metrics = replay_metrics(s)
    assert metrics["manager_overhead_p50_ms"] == 1.0
    assert metrics["endpoint_latency_p50_ms"] == ENDPOINT_MS
    assert metrics["errors"] == 0 and "mismatches" not in metrics


def test_failed_clicks_are_counted_by_status_and_the_session_goes_on():
    clock = FakeClock()
    with FakeSessionServer(clock, fail={12: 502, 21: 504}) as server:
        res = run(server, trace_of([11, 12, 13], [21, 22]), clock)
    s = summarize_replay(res)
    assert (s.clicks, s.ok, s.errors, s.errors_by_status) == (5, 3, 2, {"502": 1, "504": 1})
    assert [r.http_status for r in res.records] == [200, 502, 200, 504, 200]
    assert "endpoint failed for item 12" in res.records[1].error
    assert re.search(r"^errors +2 \(502: 1, 504: 1\)$", format_summary(s, "measured-local"), re.M)


def test_a_click_answered_later_than_the_timeout_after_its_intended_time_is_a_timeout():
    clock = FakeClock()
    with FakeSessionServer(clock, advance_s=lambda sid, pos: 0.2 if pos == 0 else 0.0) as server:
        res = run(server, trace_of([1, 2]), clock, think_s=0.05, timeout_s=0.1)
    assert [r.outcome for r in res.records] == [TIMEOUT, TIMEOUT]  # 200 ms and 150 ms late
    assert summarize_replay(res).errors_by_status == {"timeout": 2}


def test_an_unreachable_server_is_a_record_per_click_not_an_exception():
    clock = FakeClock()
    with FakeSessionServer() as server:
        url = server.url
    trace = trace_of([1, 2], [3, 4])
    plan = schedule(trace, "poisson", rate=10.0, think_s=0.0)
    res = replay(SessionClient(url), trace, plan, clock=clock)
    s = summarize_replay(res)
    assert (s.clicks, s.ok, s.errors_by_status) == (4, 0, {"ConnectionRefusedError": 4})
    assert res.deletes_failed == 2 and math.isnan(s.e2e_p50_ms)


def test_a_session_due_while_every_worker_is_busy_starts_late():
    clock = FakeClock()
    with FakeSessionServer(clock, advance_s=lambda sid, pos: 0.1) as server:
        res = run(server, trace_of([1, 2], [3, 4]), clock, rate=1e6, think_s=0.0, max_workers=1)
    second = [r for r in res.records if r.session == 1]
    assert [r.late for r in second] == [True, False]  # its first click waited for the worker
    assert res.level.late_starts == 1 and res.threads == 1


def test_two_replays_of_one_trace_never_share_a_session():
    clock = FakeClock()
    with FakeSessionServer(clock) as server:
        first = run(server, trace_of([1, 2]), clock)
        second = run(server, trace_of([1, 2]), clock)
        log = dict(server.log)
    assert first.run_id != second.run_id
    assert sorted(map(len, log.values())) == [2, 2]


def test_the_check_finds_every_click_the_server_answered_differently():
    clock = FakeClock()
    trace = trace_of([1, 2, 3], [4, 5])
    with FakeSessionServer(clock, wrong={2}) as server:
        res = run(server, trace, clock)
    result = check(res, trace, direct_invoker, k=20)
    assert (result.checked, result.mismatches, result.skipped) == (5, 1, 0)
    assert (result.first[0].position, result.first[0].prefix) == (1, (1, 2))
    assert result.first[0].why == "different top-k items"
    assert summarize_replay(res, result.mismatches).mismatches == 1


def test_the_check_compares_the_last_max_clicks_as_the_server_sends_them():
    clock = FakeClock()
    trace = trace_of([1, 2, 3, 4])
    with FakeSessionServer(clock, max_clicks=2) as server:
        res = run(server, trace, clock)
    assert check(res, trace, direct_invoker, max_clicks=2).mismatches == 0
    wrong = check(res, trace, direct_invoker, max_clicks=50)
    assert wrong.mismatches == 2 and wrong.first[0].why == "the server held 2 other clicks"


def test_the_check_skips_failed_clicks_and_counts_failed_direct_calls():
    clock = FakeClock()
    trace = trace_of([1, 2, 3])
    with FakeSessionServer(clock, fail={3: 502}) as server:
        res = run(server, trace, clock)

    def broken(sessions, k=20):
        raise RuntimeError("endpoint down")
    result = check(res, trace, broken)
    assert (result.checked, result.skipped, result.direct_errors) == (0, 1, 2)
    assert result.first_error == "RuntimeError: endpoint down"


def test_the_click_records_make_a_frame_with_one_row_per_click(tmp_path):
    clock = FakeClock()
    with FakeSessionServer(clock) as server:
        res = run(server, trace_of([1, 2], [3]), clock)
    frame = res.frame()
    assert len(frame) == 3 and frame["items"].map(len).tolist() == [20, 20, 20]
    frame.to_parquet(tmp_path / "clicks.parquet")
    assert pd.read_parquet(tmp_path / "clicks.parquet")["position"].tolist() == [0, 1, 0]


def test_server_timing_is_parsed_by_name_and_malformed_entries_are_left_out():
    assert parse_server_timing("store;dur=0.5, endpoint;desc=\"x\";dur=2, total;dur=abc") == {
        "store": 0.5, "endpoint": 2.0}
    assert parse_server_timing(None) == {}


def test_wire_ids_keep_the_servers_character_set_and_length():
    assert wire_id("replay-1", "a b/c") == "replay-1-a_b_c"
    assert len(wire_id("replay-1", "x" * 200)) == 128


def test_a_sender_that_raises_makes_a_failed_record_and_the_replay_ends():
    class Flaky:
        def click(self, session_id, item, k):
            if item == 2:
                raise ValueError("bad header")
            return ClickAnswer(200, (9,), (item,), {"endpoint": 1.0})

        def delete(self, session_id):
            raise OSError("gone")

    trace = trace_of([1, 2, 3])
    res = replay(Flaky(), trace, schedule(trace, "poisson", rate=1.0, think_s=0.1),
                 clock=FakeClock())
    assert [(r.outcome, r.error) for r in res.records] == [
        (OK, ""), (ERROR, "ValueError: bad header"), (OK, "")]
    assert res.deletes_failed == 1
