"""``LambdaDeployer.update`` against a real moto server and the local Lambda stand-in: a new
version beside the serving one, one alias switch, no failed request, and a failed update that
leaves the old version serving with nothing of the new one left."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from deployers import aws, standins
from deployers.aws_lambda import LambdaSettings
from deployers.aws_lambda import resources as res
from deployers.base import DeploymentFailed, InvocationError, SettingsError
from deployers.standins.lambda_service import LocalLambda
from tests.deployers import lambda_support

deployer = lambda_support.deployer  # the shared fixture


@pytest.fixture(scope="module")
def model_dirs(tiny_recommender, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The tiny model's Lambda function code at two paths (two model URIs), the second with one
    more file (another zip, another S3 object)."""
    from niser.lambda_bundle import write_bundle

    first = write_bundle(tiny_recommender, tmp_path_factory.mktemp("function-code"))
    second = tmp_path_factory.mktemp("function-code-b") / "code"
    shutil.copytree(first, second)
    (second / "variant.txt").write_text("b\n")
    return str(first), str(second)


def _state(name: str) -> dict[str, object]:
    """What the account and the package directory hold for function ``name``."""
    client, s3 = aws.client("lambda"), aws.client("s3")
    buckets = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    return {
        "versions": [v["Version"] for v in
                     client.list_versions_by_function(FunctionName=name)["Versions"]],
        "alias": client.get_alias(FunctionName=name, Name="live")["FunctionVersion"],
        "objects": sorted(o["Key"] for b in buckets
                          for o in s3.list_objects_v2(Bucket=b).get("Contents", [])),
        "packages": sorted(p.name for p in (standins.code_dir() / name).iterdir()
                           if not p.name.startswith("niser-lambda-"))}


def _service() -> LocalLambda:
    service = standins.current().running_lambda()
    assert service is not None
    return service


def test_update_switches_to_the_new_model(deployer, moto_server, model_dirs, tiny_recommender,
                                          registered_model_uri):
    deployer.deploy(model_dirs[0], {"memory_mb": 256, "reserved_concurrency": 3,
                                    "provisioned_concurrency": 1, "tags": {"team": "recsys"}},
                    "niser-up-1")
    endpoint = deployer.update("niser-up-1", registered_model_uri, {"memory_mb": 512})
    desc = deployer.describe("niser-up-1")
    assert desc.details["model_uri"] == registered_model_uri == endpoint.model_uri
    assert (desc.details["version"], desc.details["alias"]) == ("2", "live")
    assert (desc.cost.memory_mb, desc.cost.max_concurrency) == (512, 3), "memory changed only"
    assert desc.cost.provisioned_concurrency == 1
    assert res.function_tags("niser-up-1")["team"] == "recsys"
    assert _state("niser-up-1") == {"versions": ["$LATEST", "2"], "alias": "2", "objects": [],
                                    "packages": ["v2"]}

    raw = tiny_recommender.vocab.raw_ids[:3].tolist()
    pred = deployer.invoker("niser-up-1")([raw], 20)
    assert pred.items[0] == tiny_recommender.recommend([raw], 20)[0].items
    assert pred.raw["executed_version"] == "2"
    assert "init_ms" not in pred.raw["lambda_report"], "provisioned before the switch"
    assert _service().environments("niser-up-1") == 1, "the old environment ended"
    assert endpoint.invoke([raw], 5).raw["executed_version"] == "2"
    standins.current().close()  # as in another process: the invoker hosts the new package
    again = deployer.invoker("niser-up-1")([raw], 20)
    assert again.raw["executed_version"] == "2" and again.items == pred.items

    deployer.teardown("niser-up-1")
    assert aws.client("lambda").list_functions()["Functions"] == []
    assert not (standins.code_dir() / "niser-up-1").exists()


@pytest.mark.slow
def test_a_closed_loop_of_invokes_across_the_update_never_fails(deployer, moto_server,
                                                                model_dirs):
    endpoint = deployer.deploy(model_dirs[0], {"memory_mb": 256, "reserved_concurrency": 4},
                               "niser-up-loop")
    seen: dict[str, int] = {}
    failures: list[str] = []
    stop, before, after = threading.Event(), threading.Event(), threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                version = endpoint.invoke([[1, 2, 3]], 5).raw["executed_version"]
            except InvocationError as exc:
                failures.append(str(exc))
                continue
            seen[version] = seen.get(version, 0) + 1
            if seen[version] >= 3:
                (before if version == "1" else after).set()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        assert before.wait(120), f"no answers before the update: {failures[:3]}"
        deployer.update("niser-up-loop", model_dirs[1])  # settings kept as they are
        assert after.wait(120), "the new version never answered"
    finally:
        stop.set()
        thread.join(60)
    assert failures == [] and set(seen) == {"1", "2"}, (seen, failures[:3])
    desc = deployer.describe("niser-up-loop")
    assert (desc.cost.memory_mb, desc.cost.max_concurrency) == (256, 4)
    assert desc.details["model_uri"] == model_dirs[1]
    assert _state("niser-up-loop")["versions"] == ["$LATEST", "2"]


def _fail_after(operation: str, error: type[BaseException]):
    def hook(*args: object, **kwargs: object) -> None:
        raise error(f"injected after {operation}")
    return hook


@pytest.mark.parametrize(("operation", "error"), [
    ("s3.PutObject", KeyboardInterrupt), ("lambda.UpdateFunctionCode", RuntimeError),
    ("lambda.UpdateFunctionConfiguration", KeyboardInterrupt),
    ("lambda.PublishVersion", RuntimeError), ("lambda.PublishVersion", KeyboardInterrupt),
    ("stage", RuntimeError), ("stage", KeyboardInterrupt), ("bad-uri", RuntimeError)])
def test_a_failing_update_leaves_the_old_version_serving(deployer, moto_server, model_dirs,
                                                         monkeypatch, tmp_path, operation,
                                                         error):
    monkeypatch.setattr(res, "MAX_DIRECT_ZIP_BYTES", 1024)  # the code goes through S3 too
    deployer.deploy(model_dirs[0], {"memory_mb": 256, "provisioned_concurrency": 1,
                                    "reserved_concurrency": 2}, "niser-up-fail")
    before = _state("niser-up-fail")
    uri = model_dirs[1]
    events = aws.session().events
    if operation == "bad-uri":
        uri = str(tmp_path / "no-function-code")
        os.makedirs(uri)
    elif operation == "stage":
        monkeypatch.setattr(LocalLambda, "stage", _fail_after("stage", error))
    else:
        events.register(f"after-call.{operation}", _fail_after(operation, error),
                        unique_id="test-update-fail")
    try:
        with pytest.raises(DeploymentFailed if error is RuntimeError else error) as err:
            deployer.update("niser-up-fail", uri, {"reserved_concurrency": 3})
    finally:
        events.unregister(f"after-call.{operation}", unique_id="test-update-fail")
    if error is RuntimeError:
        assert "version 1 still serves behind alias live" in str(err.value)
    assert _state("niser-up-fail") == before == {
        "versions": ["$LATEST", "1"], "alias": "1", "objects": before["objects"],
        "packages": ["package-python3.11-x86_64"]}
    assert len(before["objects"]) == 1  # type: ignore[arg-type]
    desc = deployer.describe("niser-up-fail")
    assert (desc.details["model_uri"], desc.details["version"]) == (model_dirs[0], "1")
    assert desc.cost.max_concurrency == 2, "the grown reserved concurrency was put back"
    pred = deployer.invoker("niser-up-fail")([[1]], 3)
    assert pred.raw["executed_version"] == "1"
    assert _service().environments("niser-up-fail") == 1


def test_ctrl_c_right_after_the_switch_keeps_the_new_version_serving(deployer, moto_server,
                                                                     model_dirs):
    """Interrupted once the alias moved: the stand-in follows it, nothing new is deleted and
    the old version is left for teardown."""
    deployer.deploy(model_dirs[0], {"memory_mb": 256}, "niser-up-int")
    events = aws.session().events
    events.register("after-call.lambda.UpdateAlias", _fail_after("switch", KeyboardInterrupt),
                    unique_id="test-update-switch")
    try:
        with pytest.raises(KeyboardInterrupt):
            deployer.update("niser-up-int", model_dirs[1])
    finally:
        events.unregister("after-call.lambda.UpdateAlias", unique_id="test-update-switch")
    state = _state("niser-up-int")
    assert (state["versions"], state["alias"]) == (["$LATEST", "1", "2"], "2")
    assert deployer.invoker("niser-up-int")([[1]], 3).raw["executed_version"] == "2"
    deployer.teardown("niser-up-int")
    assert aws.client("lambda").list_functions()["Functions"] == []


def test_update_through_s3_replaces_the_code_object(deployer, moto_server, model_dirs,
                                                    monkeypatch):
    monkeypatch.setattr(res, "MAX_DIRECT_ZIP_BYTES", 1024)
    deployer.deploy(model_dirs[0], {"memory_mb": 256}, "niser-up-s3")
    old = res.function_tags("niser-up-s3")
    deployer.update("niser-up-s3", model_dirs[1], LambdaSettings.parse({"timeout_s": 20}))
    tags = res.function_tags("niser-up-s3")
    state = _state("niser-up-s3")
    assert tags[res.TAG_KEY] != old[res.TAG_KEY] and tags[res.TAG_BUCKET] == old[res.TAG_BUCKET]
    assert state["objects"] == [tags[res.TAG_KEY]] and state["versions"] == ["$LATEST", "2"]
    desc = deployer.describe("niser-up-s3")
    assert desc.details["timeout_s"] == 20 and desc.cost.memory_mb == 256, "only what was set"
    deployer.teardown("niser-up-s3")
    assert aws.client("s3").list_buckets()["Buckets"] == []


@pytest.mark.parametrize(("settings", "fragment"), [
    ({"memory_mb": 64}, "memory_mb=64"), ({"memory": 512}, "unknown key 'memory'"),
    ({"architecture": "sparc"}, "'x86_64' or 'arm64'"), ({"timeout_s": 901}, "timeout_s=901")])
def test_bad_settings_are_refused_before_any_aws_call(deployer, moto_server, model_dirs,
                                                      aws_calls, settings, fragment):
    with pytest.raises(SettingsError, match=fragment):
        deployer.update("niser-up-none", model_dirs[1], settings)
    assert aws_calls == []


def test_settings_that_clash_with_the_current_ones_change_nothing(deployer, moto_server,
                                                                  model_dirs, aws_calls):
    deployer.deploy(model_dirs[0], {"memory_mb": 256, "reserved_concurrency": 2},
                    "niser-up-set")
    before = (_state("niser-up-set"), deployer.describe("niser-up-set"))
    aws_calls.clear()
    for settings, fragment in [({"provisioned_concurrency": 3}, "exceeds reserved"),
                               ({"alias": "other"}, "an update keeps alias='live'"),
                               ({"mode": "image", "image_uri": "x"}, "keeps mode='zip'"),
                               ({"function_name": "elsewhere"}, "function_name='elsewhere'")]:
        with pytest.raises(SettingsError, match=fragment):
            deployer.update("niser-up-set", model_dirs[1], settings)
    assert {op for _, op in aws_calls} <= {"GetFunction", "ListAliases",
                                           "GetFunctionConcurrency"}, aws_calls
    assert (_state("niser-up-set"), deployer.describe("niser-up-set")) == before
    with pytest.raises(KeyError):
        deployer.update("niser-up-absent", model_dirs[1])
    with pytest.raises(SettingsError, match="deployment name"):
        deployer.update("../etc", model_dirs[1])


def test_image_mode_update_publishes_the_new_image_as_a_new_version(deployer, moto_server):
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/niser-lambda"
    deployer.deploy("models:/niser/1", {"mode": "image", "image_uri": f"{image}:1",
                                        "memory_mb": 1024}, "niser-up-img")
    deployer.update("niser-up-img", "models:/niser/2", {"image_uri": f"{image}:2"})
    client = aws.client("lambda")
    got = client.get_function(FunctionName="niser-up-img", Qualifier="live")
    assert got["Code"]["ImageUri"] == f"{image}:2" and got["Configuration"]["Version"] == "2"
    desc = deployer.describe("niser-up-img")
    assert (desc.details["model_uri"], desc.cost.memory_mb) == ("models:/niser/2", 1024)
    assert [v["Version"] for v in client.list_versions_by_function(
        FunctionName="niser-up-img")["Versions"]] == ["$LATEST", "2"]


def test_an_update_that_changes_nothing_keeps_the_serving_version(deployer, moto_server,
                                                                  model_dirs, monkeypatch):
    """Lambda publishes no version when code and configuration are unchanged; it answers with
    the latest one (moto always publishes, so the answer is played here)."""
    deployer.deploy(model_dirs[0], {"memory_mb": 256}, "niser-up-same")
    real_client = aws.client

    def same_version(service: str, **config):
        c = real_client(service, **config)
        if service == "lambda":
            c.publish_version = lambda **kwargs: {"Version": "1"}
        return c

    monkeypatch.setattr(aws, "client", same_version)
    deployer.update("niser-up-same", model_dirs[0], {"tags": {"team": "recsys"}})
    monkeypatch.setattr(aws, "client", real_client)
    assert _state("niser-up-same") == {"versions": ["$LATEST", "1"], "alias": "1", "objects": [],
                                       "packages": ["package-python3.11-x86_64"]}
    assert res.function_tags("niser-up-same")["team"] == "recsys"
    assert deployer.invoker("niser-up-same")([[1]], 3).raw["executed_version"] == "1"
