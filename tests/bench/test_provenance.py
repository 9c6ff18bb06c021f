"""One provenance vocabulary: the rule per target and the rule that combines inputs."""

import pytest

from bench.provenance import MEANING, PROVENANCES, combine, describe, of_target


def test_the_vocabulary_is_measured_real_measured_local_and_predicted():
    assert set(PROVENANCES) == {"measured-real", "measured-local", "predicted"}


def test_an_aws_target_against_a_local_control_plane_is_measured_local(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    assert of_target("sagemaker") == "measured-local"
    assert of_target("lambda") == "measured-local"


def test_an_aws_target_against_real_aws_is_measured_real(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert of_target("lambda") == "measured-real"
    assert of_target("sagemaker") == "measured-real"


def test_a_local_target_is_always_measured_local(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert of_target("local") == "measured-local"
    assert of_target("inprocess") == "measured-local"


def test_a_figure_resting_on_any_measured_local_input_is_measured_local():
    assert combine("measured-real", "measured-local") == "measured-local"
    assert combine("predicted", "measured-local", "measured-real") == "measured-local"


def test_predicted_outranks_measured_real_and_real_alone_stays_real():
    assert combine("measured-real", "predicted") == "predicted"
    assert combine("measured-real", "measured-real") == "measured-real"


def test_combining_nothing_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        combine()


def test_a_service_specific_local_endpoint_makes_only_that_target_local(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", "http://localhost:4566")
    assert of_target("sagemaker") == "measured-local"
    assert of_target("lambda") == "measured-real"


@pytest.mark.parametrize("label", PROVENANCES)
def test_a_described_label_names_itself_then_its_meaning(label):
    assert describe(label) == f"{label}: {MEANING[label]}"
    assert describe(label).startswith(label + ": ")
