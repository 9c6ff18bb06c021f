"""The serving pyfunc in process: answers, fallbacks, and every validation error."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.model import PythonModelContext

from niser import contract, pyfunc
from niser.inference import Recommender


@pytest.fixture(scope="module")
def model(tiny_recommender: Recommender, tmp_path_factory: pytest.TempPathFactory
          ) -> pyfunc.NiserModel:
    folder = tmp_path_factory.mktemp("recommender")
    tiny_recommender.save(folder)
    m = pyfunc.NiserModel()
    m.load_context(PythonModelContext(artifacts={"recommender": str(folder)}, model_config=None))
    return m


def table(rows: list[dict[str, object]]) -> pd.DataFrame:
    """The pyfunc's rows as the table they describe."""
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    return pd.DataFrame(rows)


def known(rec: Recommender, n: int) -> list[int]:
    return [int(x) for x in rec.vocab.raw_ids[:n]]


def test_predict_returns_top_k_raw_ids_per_session(model, tiny_recommender):
    sessions = [known(tiny_recommender, 3), known(tiny_recommender, 1)]
    out = table(model.predict(None, pd.DataFrame({"session": sessions}), {"k": 7}))
    assert list(out.columns) == ["items", "scores", "unknown_items", "fallback"]
    assert len(out) == 2
    direct = tiny_recommender.recommend(sessions, 7)
    vocab = set(tiny_recommender.vocab.raw_ids.tolist())
    for row, rec in zip(out.itertuples(), direct, strict=True):
        assert row.items == rec.items and len(row.items) == 7
        assert set(row.items) <= vocab
        assert row.scores == sorted(row.scores, reverse=True)
        assert row.unknown_items == [] and not row.fallback


def test_default_k_is_20(model, tiny_recommender):
    out = table(model.predict(None, pd.DataFrame({"session": [known(tiny_recommender, 2)]}), None))
    assert len(out["items"][0]) == pyfunc.DEFAULT_K == 20


def test_unknown_ids_dropped_and_reported(model, tiny_recommender):
    first = known(tiny_recommender, 1)[0]
    out = table(model.predict(None, pd.DataFrame({"session": [[7, first, 9]]}), {"k": 5}))
    assert out["unknown_items"][0] == [7, 9]
    assert bool(out["fallback"][0]) is False
    assert out["items"][0] == tiny_recommender.recommend([[first]], 5)[0].items


@pytest.mark.parametrize("session", [[7, 9], []], ids=["all-unknown", "empty"])
def test_session_without_known_items_gets_popular_items_as_fallback(model, tiny_recommender,
                                                                    session):
    out = table(model.predict(None, pd.DataFrame({"session": [session]}), {"k": 5}))
    assert bool(out["fallback"][0]) is True
    popular = np.argsort(-tiny_recommender.popularity[1:], kind="stable")[:5] + 1
    assert out["items"][0] == tiny_recommender.vocab.decode(popular).tolist()
    assert out["unknown_items"][0] == session


def test_k_above_catalogue_returns_whole_catalogue(model, tiny_recommender):
    out = table(model.predict(None, pd.DataFrame({"session": [known(tiny_recommender, 2)]}),
                        {"k": contract.MAX_K}))
    assert sorted(out["items"][0]) == sorted(tiny_recommender.vocab.raw_ids.tolist())


def test_records_numpy_and_tuples_are_accepted(model, tiny_recommender):
    ids = known(tiny_recommender, 2)
    frame = pd.DataFrame({"session": [np.array(ids, dtype=np.int64), tuple(ids)]})
    out = table(model.predict(None, frame, {"k": 3}))
    assert out["items"][0] == out["items"][1]
    assert pyfunc.parse_sessions([{"session": ids}]) == [ids]


BAD_SESSIONS = [
    # (rows, expected fragments of the message)
    ([[1], 5], ["row 1", "field 'session'", "expected a list", "int 5"]),
    ([[1], "1 2"], ["row 1", "field 'session'", "'1 2'"]),
    ([[1], None], ["row 1", "field 'session'", "None"]),
    ([[1], {"a": 1}], ["row 1", "field 'session'", "dict"]),
    ([[1, 2], [3, "4"]], ["row 1", "field 'session'", "position 1", "'4'", "str"]),
    ([[2.5]], ["row 0", "field 'session'", "2.5", "must be an integer"]),
    ([[1], [3.0]], ["row 1", "field 'session'", "3.0", "float"]),
    ([[True]], ["row 0", "field 'session'", "bool True"]),
    ([[1], [1], [1], [4, -5]], ["row 3", "field 'session'", "item id -5 is not a positive"]),
    ([[0]], ["row 0", "field 'session'", "item id 0 is not a positive"]),
    ([[2**70]], ["row 0", "field 'session'", str(2**70)]),
    ([[1, None]], ["row 0", "field 'session'", "position 1", "None"]),
    ([[float("nan")]], ["row 0", "field 'session'", "nan"]),
]


@pytest.mark.parametrize(("rows", "fragments"), BAD_SESSIONS,
                         ids=[str(i) for i in range(len(BAD_SESSIONS))])
def test_bad_session_raises_invalid_parameter_naming_row_field_and_value(model, rows, fragments):
    with pytest.raises(MlflowException) as err:
        model.predict(None, pd.DataFrame({"session": rows}), {"k": 3})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert err.value.get_http_status_code() == 400
    for fragment in fragments:
        assert fragment in err.value.message


def test_missing_session_column_names_field_and_columns_given(model):
    with pytest.raises(MlflowException, match=r"row 0, field 'session': missing.*'sessions'"):
        model.predict(None, pd.DataFrame({"sessions": [[1]]}), None)


def test_empty_request_is_refused(model):
    with pytest.raises(MlflowException, match=r"row 0, field 'session'.*no sessions \(0 rows\)"):
        model.predict(None, pd.DataFrame({"session": []}), None)


def test_more_than_max_sessions_is_refused_before_any_work(model):
    frame = pd.DataFrame({"session": [[1]] * (pyfunc.MAX_SESSIONS + 1)})
    with pytest.raises(MlflowException, match=r"row 10000, field 'session'.*10001 sessions"):
        model.predict(None, frame, None)
    assert len(model.predict(None, frame.iloc[: pyfunc.MAX_SESSIONS], {"k": 1})) == 10_000


@pytest.mark.parametrize("k", [0, -1, 1001, 2.5, 20.0, "20", True, [20]])
def test_bad_k_raises_invalid_parameter_naming_k(model, k):
    with pytest.raises(MlflowException) as err:
        model.predict(None, pd.DataFrame({"session": [[1]]}), {"k": k})
    assert err.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "param 'k'" in err.value.message
    assert repr(k) in err.value.message or str(k) in err.value.message


def test_missing_artifact_is_reported():
    with pytest.raises(MlflowException, match="no 'recommender' artifact"):
        pyfunc.NiserModel().load_context(PythonModelContext(artifacts={}, model_config=None))


def test_signature_declares_session_column_outputs_and_k_default():
    sig = pyfunc.serving_signature()
    assert sig.inputs.input_names() == ["session"]
    assert sig.outputs.input_names() == list(pyfunc.OUTPUT_COLUMNS)
    (k,) = sig.params.params
    assert (k.name, k.default) == ("k", 20)


def test_logged_model_predicts_and_enforces_k_type(registered_model_uri, tiny_recommender):
    loaded = mlflow.pyfunc.load_model(registered_model_uri)
    ids = known(tiny_recommender, 2)
    out = table(loaded.predict(pd.DataFrame({"session": [ids]}), params={"k": 4}))
    assert out["items"][0] == tiny_recommender.recommend([ids], 4)[0].items
    with pytest.raises(MlflowException, match=r"'k'.*2\.5"):
        loaded.predict(pd.DataFrame({"session": [ids]}), params={"k": 2.5})
    with pytest.raises(MlflowException, match=r"row 0, field 'session'.*-3"):
        loaded.predict(pd.DataFrame({"session": [[-3]]}))


def test_pyfunc_file_ends_with_set_model():
    text = Path(pyfunc.__file__).read_text().rstrip().splitlines()
    assert text[-1] == "mlflow.models.set_model(NiserModel())"


def test_rows_are_written_as_the_same_bytes_as_a_dataframe_of_them(model, tiny_recommender):
    import io

    from mlflow.pyfunc.scoring_server import predictions_to_json

    sessions = [known(tiny_recommender, 3), [7, 9], []]
    rows = model.predict(None, pd.DataFrame({"session": sessions}), {"k": 5})
    as_rows, as_frame = io.StringIO(), io.StringIO()
    predictions_to_json(rows, as_rows)
    predictions_to_json(pd.DataFrame(rows, columns=list(pyfunc.OUTPUT_COLUMNS)), as_frame)
    assert as_rows.getvalue() == as_frame.getvalue()
    assert '"fallback": true' in as_rows.getvalue()
