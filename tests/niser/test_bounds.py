"""Upper bounds and finite numbers of the training and synthetic-data settings, and the metric a
model is compared on: each refusal names the field, the value and the limit with its reason."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from niser.metrics import metric_names
from niser.raw import check_synthetic_spec
from niser.synthetic import MAX_CLICK_CELLS, MAX_ITEMS, MAX_SESSIONS, SyntheticConfig
from niser.train import (
    MAX_BATCH_SIZE,
    MAX_DIM,
    MAX_EPOCHS,
    MAX_K,
    MAX_KS,
    TrainConfig,
    check_compared_metric,
    final_metric_names,
)


@pytest.mark.parametrize("field, value", [
    ("epochs", MAX_EPOCHS + 1), ("dim", MAX_DIM + 1), ("batch_size", MAX_BATCH_SIZE + 1),
    ("eval_batch_size", MAX_BATCH_SIZE + 1), ("gnn_steps", 17), ("max_positions", 1025),
    ("patience", MAX_EPOCHS + 1), ("lr_step", MAX_EPOCHS + 1), ("ks", (10, MAX_K + 1)),
])
def test_train_config_refuses_values_above_their_limit_saying_why(field, value):
    with pytest.raises(ValidationError, match="above the limit of") as info:
        TrainConfig(**{field: value})
    assert info.value.errors()[0]["loc"][0] == field
    assert ":" in str(info.value).split("above the limit of", 1)[1]  # a reason follows


def test_train_config_accepts_its_limits():
    TrainConfig(epochs=MAX_EPOCHS, dim=MAX_DIM, batch_size=MAX_BATCH_SIZE, ks=(MAX_K,))


def test_train_config_bounds_the_number_of_cut_offs():
    with pytest.raises(ValidationError, match=f"more than the limit of {MAX_KS}"):
        TrainConfig(ks=tuple(range(1, MAX_KS + 2)))
    with pytest.raises(ValidationError):
        TrainConfig(ks=())


@pytest.mark.parametrize("field", ["lr", "weight_decay", "sigma", "dropout", "lr_gamma"])
@pytest.mark.parametrize("value", [float("inf"), float("nan"), float("-inf")])
def test_train_config_refuses_inf_and_nan(field, value):
    with pytest.raises(ValidationError) as info:
        TrainConfig(**{field: value})
    assert info.value.errors()[0]["loc"] == (field,)


def test_train_config_refuses_a_learning_rate_above_one():
    with pytest.raises(ValidationError, match="lr"):
        TrainConfig(lr=2.0)


@pytest.mark.parametrize("field, value", [
    ("n_items", MAX_ITEMS + 1), ("n_sessions", MAX_SESSIONS + 1), ("max_length", 1001)])
def test_synthetic_config_refuses_sizes_above_their_limit(field, value):
    with pytest.raises(ValidationError, match="above the limit of"):
        SyntheticConfig(**{field: value})


def test_synthetic_config_refuses_a_click_matrix_that_would_not_fit():
    with pytest.raises(ValidationError, match="n_sessions x max_length") as info:
        SyntheticConfig(n_sessions=MAX_SESSIONS, max_length=MAX_CLICK_CELLS // MAX_SESSIONS + 1)
    assert f"{MAX_CLICK_CELLS:,}" in str(info.value)


@pytest.mark.parametrize("field", ["mean_length", "jump_probability", "zipf_exponent",
                                   "test_fraction"])
def test_synthetic_config_refuses_inf_and_nan(field):
    for value in (float("inf"), float("nan")):
        with pytest.raises(ValidationError):
            SyntheticConfig(**{field: value})


def test_a_synthetic_dataset_spec_is_checked_without_generating():
    check_synthetic_spec("synthetic:n_items=100,seed=3")
    check_synthetic_spec("some/folder")  # not synthetic: left to load_dataset
    with pytest.raises(ValueError, match="n_sessions"):
        check_synthetic_spec(f"synthetic:n_sessions={MAX_SESSIONS + 1}")


def test_the_compared_metric_must_be_a_validation_metric_the_evaluation_computes():
    assert metric_names((20, 10)) == ["recall_10", "mrr_10", "recall_20", "mrr_20"]
    assert "val_mrr_20" in final_metric_names((10, 20))
    assert check_compared_metric("val_mrr_20", (10, 20)) == "val_mrr_20"
    with pytest.raises(ValueError, match="not a metric the evaluation computes") as info:
        check_compared_metric("val_ndcg_20", (10, 20))
    assert "val_recall_10, val_mrr_10, val_recall_20, val_mrr_20" in str(info.value)
    with pytest.raises(ValueError, match="valid with ks=\\(10,\\)"):
        check_compared_metric("val_recall_20", (10,))


def test_a_test_metric_is_refused_as_the_compared_metric():
    with pytest.raises(ValueError, match="test metric"):
        check_compared_metric("recall_20", (10, 20))
