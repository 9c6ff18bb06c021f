"""Replay traces: whole sessions rebuilt from test.tsv, raw logs read in click order, options."""

import pytest

from bench.replay_trace import Trace, TraceSession, load_trace, read_test_tsv
from niser.data import DataError

DIGINETICA_HEADER = "session_id;user_id;item_id;timeframe;eventdate\n"


def write(path, text):
    path.write_text(text)
    return path


def test_test_tsv_sessions_are_the_first_prefix_plus_its_target(tmp_path):
    tsv = write(tmp_path / "test.tsv",
                "1 2 3\t4\n1 2\t3\n1\t2\n"   # session 1 2 3 4
                "5\t6\n"                     # session 5 6
                "7 7\t8\n7\t7\n")            # session 7 7 8 (a repeated item)
    sessions = read_test_tsv(tsv)
    assert [(s.session_id, s.items) for s in sessions] == [
        ("line1", (1, 2, 3, 4)), ("line4", (5, 6)), ("line5", (7, 7, 8))]
    assert all(s.offsets_s is None and s.start_s is None for s in sessions)


def test_a_line_equal_to_the_previous_sessions_last_prefix_starts_a_new_session(tmp_path):
    tsv = write(tmp_path / "test.tsv", "1 2\t3\n1\t2\n1\t2\n")
    assert [s.items for s in read_test_tsv(tsv)] == [(1, 2, 3), (1, 2)]


def test_a_folder_is_read_through_its_test_tsv_with_first_n_and_min_length(tmp_path):
    write(tmp_path / "test.tsv", "1 2\t3\n1\t2\n4\t5\n6 7 8\t9\n6 7\t8\n6\t7\n")
    trace = load_trace(tmp_path, sessions=2, min_length=3)
    assert [s.items for s in trace.sessions] == [(1, 2, 3), (6, 7, 8, 9)]
    assert (trace.clicks, trace.timed, trace.started) == (7, False, False)


@pytest.mark.parametrize(("line", "message"), [
    ("1 x\t2\n", "test.tsv:2: prefix 'x' is not a positive integer item id"),
    ("1 2 3\n", "test.tsv:2: expected 'prefix ids<TAB>target', got 1"),
    ("1\t2 3\n", "test.tsv:2: expected one target item, got '2 3'"),
    ("\t2\n", "test.tsv:2: empty prefix"),
])
def test_a_bad_test_tsv_line_is_named_with_its_file_and_line(tmp_path, line, message):
    write(tmp_path / "test.tsv", "1\t2\n" + line)
    with pytest.raises(DataError) as err:
        load_trace(tmp_path)
    assert message in str(err.value)


def test_raw_diginetica_clicks_are_ordered_by_timeframe_with_offsets_in_seconds(tmp_path):
    log = write(tmp_path / "views.csv", DIGINETICA_HEADER
                + "7;NA;30;2500;2016-05-09\n7;NA;10;1000;2016-05-09\n7;NA;20;1250;2016-05-09\n"
                + "3;NA;40;0;2016-05-10\n3;NA;41;60000;2016-05-10\n"
                + "9;NA;50;500;2016-05-10\n")
    trace = load_trace(log)
    assert [(s.session_id, s.items, s.offsets_s) for s in trace.sessions] == [
        ("7", (10, 20, 30), (0.0, 0.25, 1.5)), ("3", (40, 41), (0.0, 60.0))]  # 9: one click
    assert trace.timed and not trace.started


def test_raw_diginetica_last_days_keeps_the_sessions_of_the_last_days(tmp_path):
    log = write(tmp_path / "views.csv", DIGINETICA_HEADER
                + "1;NA;10;0;2016-05-01\n1;NA;11;5;2016-05-01\n"
                + "2;NA;20;0;2016-05-08\n2;NA;21;5;2016-05-09\n"
                + "3;NA;30;0;2016-05-10\n3;NA;31;5;2016-05-10\n")
    assert [s.session_id for s in load_trace(log, last_days=7).sessions] == ["2", "3"]
    assert [s.session_id for s in load_trace(log, last_days=1).sessions] == ["3"]


def test_raw_yoochoose_gives_click_offsets_and_session_starts(tmp_path):
    log = write(tmp_path / "clicks.dat",
                "1,2014-04-07T10:51:09.277Z,214536502,0\n1,2014-04-07T10:51:11.777Z,214536500,0\n"
                "2,2014-04-07T10:50:09.277Z,214662742,0\n2,2014-04-07T10:50:19.277Z,214662742,0\n")
    trace = load_trace(log)
    assert [(s.items, s.offsets_s) for s in trace.sessions] == [
        ((214536502, 214536500), (0.0, 2.5)), ((214662742, 214662742), (0.0, 10.0))]
    assert trace.started
    assert trace.sessions[0].start_s - trace.sessions[1].start_s == pytest.approx(60.0)


def test_a_bad_raw_line_is_named_with_its_file_and_line(tmp_path):
    log = write(tmp_path / "views.csv", DIGINETICA_HEADER + "1;NA;10;0;2016-05-01\n1;NA;x;5;2016-05-01\n")
    with pytest.raises(DataError, match=r"views.csv:3: item_id 'x' is not a positive integer"):
        load_trace(log)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sessions": 0}, "sessions must be >= 1"),
    ({"min_length": 0}, "min_length must be >= 1"),
    ({"min_length": 9}, "none of its 1 sessions has at least 9 clicks"),
    ({"last_days": 7}, "last_days applies to raw click logs only"),
    ({"last_days": 0}, "last_days must be >= 1"),
])
def test_bad_options_are_refused_naming_the_option(tmp_path, kwargs, message):
    write(tmp_path / "test.tsv", "1\t2\n")
    with pytest.raises(ValueError, match=message):
        load_trace(tmp_path, **kwargs)


def test_unknown_paths_and_forms_are_refused_with_the_accepted_forms(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_trace(tmp_path / "missing.csv")
    with pytest.raises(DataError, match=r"the folder has no test\.tsv"):
        load_trace(tmp_path)
    with pytest.raises(DataError, match="not a known trace form"):
        load_trace(write(tmp_path / "clicks.json", "{}"))


def test_a_session_refuses_offsets_that_do_not_fit_its_clicks():
    with pytest.raises(ValueError, match="2 click offsets for 3 clicks"):
        TraceSession("s", (1, 2, 3), (0.0, 1.0))
    with pytest.raises(ValueError, match="must start at 0 and never decrease"):
        TraceSession("s", (1, 2), (0.0, -1.0))
    assert Trace("x", ()).timed is False


@pytest.mark.shared_data
def test_the_shared_diginetica_test_split_gives_1000_whole_sessions(shared_data):
    trace = load_trace(shared_data / "diginetica", sessions=1000)
    assert len(trace.sessions) == 1000
    assert trace.sessions[0].items == (21553, 20071, 8762, 21566, 6381, 21566)
    assert min(len(s.items) for s in trace.sessions) >= 2


@pytest.mark.shared_data
def test_the_shared_raw_diginetica_sample_has_click_times(shared_data):
    trace = load_trace(shared_data / "diginetica-raw-sample" / "train-item-views.csv",
                       sessions=1000)
    assert len(trace.sessions) == 1000 and trace.timed and not trace.started
    first = trace.sessions[0]
    assert first.session_id == "1" and first.items[:2] == (9654, 33043)
    assert first.offsets_s[:2] == (0.0, 98.064)
