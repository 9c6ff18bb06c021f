"""SageMaker real-time and serverless endpoints for a registered MLflow model.

Where MLflow's built-in ``sagemaker`` target is reused, and where not. Reused: the model archive
layout, the container environment that the mlflow-pyfunc image reads, the flavor check, the
default image and bucket names and the ``app_name`` tag (see ``resources``), so MLflow's
own client (``mlflow.deployments.get_deploy_client("sagemaker")``) lists, reads and deletes what
this deployer creates, and ``mlflow deployments create -t sagemaker`` stays the plain path. Not
reused: its create/update/delete calls, because they build their own boto3 clients (bypassing
``deployers.aws.client``, the one seam), leave the model and config behind when a later step
fails, know no autoscaling or execution-role generation, and delete the old model of an update
only through their own flow. Here every step registers its undo, so any failure after the first
resource deletes all that was created (endpoint, config, model, S3 archive, autoscaling, role,
bucket) before ``DeploymentFailed`` is raised.

Serving image: ``image_url`` defaults to ``<account>.dkr.ecr.<region>.amazonaws.com/
mlflow-pyfunc:<mlflow version>``, the image ``mlflow sagemaker build-and-push-container`` builds
and pushes (that needs Docker on the user's side). Deploy refuses to start without its repository.

Blue/green update (``update``): a new model and endpoint config, ``UpdateEndpoint`` with an
all-at-once blue/green policy (serverless variants take SageMaker's default replacement), wait
for InService on the new config, then delete the old config, model and archive.

Local mode (``settings.local``, default on when the SageMaker control plane is on this machine,
e.g. a moto server): once the control plane is done, the SageMaker stand-in
(``deployers.standins.LocalSageMaker``) reads the archive back from S3 and serves it with
``mlflow models serve`` behind its nginx data plane, and
the endpoint's invoker passes that ``endpoint_url`` to its ``sagemaker-runtime`` client only.
The serving image is then never pulled, so its ECR repository is not required.

Shapes in local mode (``standin``): each instance is a scoring server in a cgroup shaped like
the instance type (``instances.json``: its vCPUs as CPU quota and visible cores, its memory); a
serverless variant's server is limited to its memory only. An instance type of more vCPUs than
the cores this process may use is refused by ``parse_settings``: a shape is never run smaller
than asked. ``usage`` reads the servers' groups (``None`` against AWS or unshaped); ``capacity``
is ``None``: the stand-in holds any instance count it accepts, one server per instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from deployers import aws, roles, standins
from deployers.base import (
    CostDrivers,
    Deployer,
    DeployerError,
    DeploymentFailed,
    Description,
    Endpoint,
    Settings,
    Undo,
    Usage,
)
from deployers.sagemaker import resources as res
from deployers.sagemaker import role as sm_role
from deployers.sagemaker import standin
from deployers.sagemaker.invoker import SageMakerInvoker
from deployers.sagemaker.settings import SageMakerSettings


def _serving() -> standins.LocalSageMaker:
    return standins.current().sagemaker()


def _served_url(name: str) -> str | None:
    serving = standins.current().running_sagemaker()
    return serving.url(name) if serving is not None else None


class SageMakerDeployer(Deployer[SageMakerSettings]):
    """Hosts a registered model on a SageMaker endpoint; see the module docstring."""

    name: ClassVar[str] = "sagemaker"
    settings_cls = SageMakerSettings
    gone = staticmethod(aws.absent)
    aws_service: ClassVar[str | None] = "sagemaker"

    def parse_settings(self, raw: Mapping[str, Any] | Settings | None) -> SageMakerSettings:
        """The typed settings; in local mode ``SettingsError`` also when the instance type has
        more vCPUs than the cores this process may use (nothing is created, nothing called)."""
        return standin.check_fits(super().parse_settings(raw))

    def create(self, model_uri: str, s: SageMakerSettings, name: str, undo: Undo) -> Endpoint:
        """Create bucket (if absent), role (if none given), model, config, endpoint, autoscaling.

        Blocks until InService (and, locally, until the stand-in's server answers).
        """
        self._create(model_uri, s, name, undo)
        return Endpoint(target=self.name, name=name, model_uri=model_uri, url=self._url(name),
                        invoke=self.invoker(name), settings=s)

    def _create(self, model_uri: str, s: SageMakerSettings, name: str, undo: Undo) -> None:
        sm = aws.client("sagemaker")
        acct = res.identity()
        image = s.image_url or res.default_image(acct)
        local = standin.is_local(s)
        if not local:  # in local mode the scoring server runs here: no image is ever pulled
            res.check_image(image)
        bucket = s.bucket or res.default_bucket(acct)
        tags = {**s.tags, **undo.owner.tags(), res.TAG_BUCKET: bucket}
        res.ensure_bucket(bucket, acct.region, undo)
        role = s.execution_role_arn
        if role is None:
            role_res = sm_role.RoleResources(acct.account, acct.region, acct.partition, name,
                                             bucket, f"{res.PREFIX}/{name}", image)
            role = roles.create_owned(undo, sm_role.role_name(name), lambda: sm_role.create_role(
                role_res, {**s.tags, **undo.owner.tags()}))
            tags[res.TAG_ROLE] = sm_role.role_name(name)
        model_name = res.create_model(model_uri, name, image, role, bucket, tags, undo,
                                      role_is_new=s.execution_role_arn is None,
                                      model_env={**res.worker_env(
                                          None if s.serverless else s.instance_type,
                                          s.model_server_workers), **s.environment})
        config = res.new_config_name(name)
        undo.push(f"endpoint config {config}",
                  lambda: sm.delete_endpoint_config(EndpointConfigName=config))
        sm.create_endpoint_config(EndpointConfigName=config, Tags=res.tag_list(tags, name),
                                  ProductionVariants=[res.variant(s, model_name)])
        undo.push(f"endpoint {name}", lambda: sm.delete_endpoint(EndpointName=name))
        sm.create_endpoint(EndpointName=name, EndpointConfigName=config,
                           Tags=res.tag_list({**tags, res.TAG_MODEL_URI: model_uri}, name))
        res.wait_in_service(name, config, s.wait_timeout_s)
        if s.autoscaling is not None:
            undo.push("autoscaling", lambda: res.deregister_autoscaling(name))
            res.register_autoscaling(name, s)
        if local:
            undo.push("local scoring server", lambda: _serving().stop(name))
            _serving().serve(name, model_name, s.variant_name, s.model_server_workers,
                             *standin.server_shape(res.variant(s, model_name)))

    def _url(self, name: str) -> str | None:
        base = _served_url(name)
        return f"{base}/endpoints/{name}/invocations" if base else None

    def invoker(self, name: str) -> SageMakerInvoker:
        """An invoker for endpoint ``name``, through the local data plane when served by this
        process; ``KeyError`` if the endpoint is absent."""
        self._owned_tags(name)
        return SageMakerInvoker(name, _served_url(name))

    # ---- blue/green update ----------------------------------------------------------------

    def update(self, name: str, model_uri: str, timeout_s: float = 3600.0) -> Endpoint:
        """Move endpoint ``name`` to ``model_uri`` blue/green, keeping its variant settings.

        On failure before the switch, the new model and config are deleted and the old ones keep
        serving; ``DeploymentFailed`` says so.
        """
        sm = aws.client("sagemaker")
        tags = self._owned_tags(name)
        old_config = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
        variants = sm.describe_endpoint_config(EndpointConfigName=old_config)["ProductionVariants"]
        old_models = [v["ModelName"] for v in variants]
        first = sm.describe_model(ModelName=old_models[0])
        container = first["PrimaryContainer"]
        workers = container.get("Environment", {}).get("MLFLOW_MODELS_WORKERS")
        keep = {k: v for k, v in tags.items() if k not in {res.TAG_MODEL_URI, "app_name"}}
        bucket = container["ModelDataUrl"].removeprefix("s3://").split("/", 1)[0]
        undo = Undo(aws.absent)
        try:
            new_model = res.create_model(model_uri, name, container["Image"],
                                         first["ExecutionRoleArn"], bucket, keep, undo,
                                         model_env=_model_env(container))
            new_config = res.new_config_name(name)
            undo.push(f"endpoint config {new_config}",
                      lambda: sm.delete_endpoint_config(EndpointConfigName=new_config))
            sm.create_endpoint_config(
                EndpointConfigName=new_config, Tags=res.tag_list(keep, name),
                ProductionVariants=[_copy_variant(v, new_model) for v in variants])
            request: dict[str, Any] = {"EndpointName": name, "EndpointConfigName": new_config}
            if not any("ServerlessConfig" in v for v in variants):
                request["DeploymentConfig"] = {"BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE",
                                                    "WaitIntervalInSeconds": 0},
                    "TerminationWaitInSeconds": 0,
                    "MaximumExecutionTimeoutInSeconds": int(min(max(timeout_s, 600), 28800))}}
            if res.scalable_targets(name):  # keep the instance count autoscaling chose
                request["RetainAllVariantProperties"] = True
            sm.update_endpoint(**request)
            res.wait_in_service(name, new_config, timeout_s)
            if _served_url(name):
                _serving().serve(name, new_model, variants[0]["VariantName"],
                                 int(workers) if workers else None,
                                 *standin.server_shape(variants[0]))
        except BaseException as exc:
            current = sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
            if current != old_config:  # the switch began: the new config is what serves now
                if not isinstance(exc, Exception):
                    raise
                raise DeploymentFailed(
                    f"updating {name!r} to {model_uri} failed after the switch to {current!r} "
                    f"began: {exc}; nothing was deleted, inspect the endpoint") from exc
            problems = undo.run()
            if not isinstance(exc, Exception):  # Ctrl-C: cleaned up, re-raised unchanged
                raise
            raise DeploymentFailed(
                f"updating {name!r} to {model_uri} failed: {exc}; the endpoint still serves "
                f"config {old_config!r}" + (f"; cleanup problems: {problems}" if problems else "")
            ) from exc
        sm.delete_endpoint_config(EndpointConfigName=old_config)
        for model in old_models:
            res.delete_model(model)
        arn = sm.describe_endpoint(EndpointName=name)["EndpointArn"]
        sm.add_tags(ResourceArn=arn, Tags=res.tag_list({res.TAG_MODEL_URI: model_uri}, name))
        return Endpoint(target=self.name, name=name, model_uri=model_uri, url=self._url(name),
                        invoke=self.invoker(name),
                        settings=_settings_of(variants[0], workers, self._url(name) is not None))

    # ---- describe / list / teardown -------------------------------------------------------

    def _owned_tags(self, name: str) -> dict[str, str]:
        """Tags of endpoint ``name``; KeyError if absent, DeployerError if not made here."""
        sm = aws.client("sagemaker")
        try:
            arn = sm.describe_endpoint(EndpointName=name)["EndpointArn"]
        except Exception as exc:
            if res.absent(exc):
                raise KeyError(f"no SageMaker endpoint named {name!r}") from None
            raise
        tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}
        if tags.get(res.TAG_DEPLOYMENT) != name:
            raise DeployerError(f"endpoint {name!r} was not created by this deployer (no "
                                f"{res.TAG_DEPLOYMENT} tag); manage it with the AWS console/CLI")
        return tags

    def describe(self, name: str) -> Description:
        """Status, variant and what drives the cost; ``KeyError`` if absent."""
        sm = aws.client("sagemaker")
        tags = self._owned_tags(name)
        ep = sm.describe_endpoint(EndpointName=name)
        cfg = sm.describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
        v = cfg["ProductionVariants"][0]
        live = {pv["VariantName"]: pv for pv in ep.get("ProductionVariants", [])}.get(
            v["VariantName"], {})
        details: dict[str, Any] = {
            "endpoint_config": ep["EndpointConfigName"], "model": v["ModelName"],
            "model_uri": tags.get(res.TAG_MODEL_URI), "variant": v["VariantName"],
            "region": aws.region(), "local_url": self._url(name)}
        env = sm.describe_model(ModelName=v["ModelName"])["PrimaryContainer"].get(
            "Environment", {})
        if str(env.get("MLFLOW_MODELS_WORKERS", "")).isdigit():
            details["workers"] = int(env["MLFLOW_MODELS_WORKERS"])
        for t in res.scalable_targets(name):
            details.update(autoscaling_min=t["MinCapacity"], autoscaling_max=t["MaxCapacity"])
        details.update(standin.served_details(name))
        if "ServerlessConfig" in v:
            sc = v["ServerlessConfig"]
            cost = CostDrivers(kind="serverless", memory_mb=int(sc["MemorySizeInMB"]),
                               max_concurrency=int(sc["MaxConcurrency"]))
        else:
            count = live.get("CurrentInstanceCount") or v["InitialInstanceCount"]
            cost = CostDrivers(kind="instance", instance_type=v["InstanceType"],
                               instance_count=int(count))
        return Description(target=self.name, name=name, status=ep["EndpointStatus"], cost=cost,
                           details=details)

    def usage(self, name: str) -> Usage | None:
        """CPU used so far by the stand-in servers of ``name`` (replaced ones included);
        ``None`` when this process does not serve it (a real AWS endpoint) or runs unshaped."""
        serving = standins.current().running_sagemaker()
        return serving.usage(name) if serving is not None else None

    def capacity(self, name: str) -> None:
        """``None``: the stand-in runs one server per instance, so it sets no limit of its own
        (the instance count bounds a real endpoint's concurrency)."""
        return None

    def list(self) -> list[str]:
        """Endpoints that carry this deployer's tag."""
        sm = aws.client("sagemaker")
        names = []
        for page in sm.get_paginator("list_endpoints").paginate():
            for ep in page["Endpoints"]:
                tags = sm.list_tags(ResourceArn=ep["EndpointArn"])["Tags"]
                if any(t["Key"] == res.TAG_DEPLOYMENT for t in tags):
                    names.append(ep["EndpointName"])
        return sorted(names)

    def teardown(self, name: str) -> None:
        """Delete the endpoint, autoscaling, every config/model/archive of ``name`` and the role
        created for it. Idempotent: leftovers of an interrupted run are swept up too."""
        sm = aws.client("sagemaker")
        serving = standins.current().running_sagemaker()
        if serving is not None:
            serving.stop(name)
        try:
            tags = self._owned_tags(name)
        except KeyError:
            tags = {}
        res.deregister_autoscaling(name)
        if tags:
            sm.delete_endpoint(EndpointName=name)
        for page in sm.get_paginator("list_endpoint_configs").paginate(NameContains=name[:50]):
            for c in page["EndpointConfigs"]:
                if c["EndpointConfigName"].startswith(f"{name[:50]}-c-") and _mine(
                        c["EndpointConfigArn"], name):
                    sm.delete_endpoint_config(EndpointConfigName=c["EndpointConfigName"])
        for page in sm.get_paginator("list_models").paginate(NameContains=name[:50]):
            for m in page["Models"]:
                if m["ModelName"].startswith(f"{name[:50]}-m-") and _mine(m["ModelArn"], name):
                    res.delete_model(m["ModelName"])
        role = sm_role.role_name(name)
        if roles.role_tags(role).get(res.TAG_DEPLOYMENT) == name:
            roles.delete_role(role)


def _mine(arn: str, name: str) -> bool:
    tags = aws.client("sagemaker").list_tags(ResourceArn=arn)["Tags"]
    return any(t["Key"] == res.TAG_DEPLOYMENT and t["Value"] == name for t in tags)


def _copy_variant(v: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The variant ``v`` of a described config, serving ``model`` instead."""
    keys = ("VariantName", "InitialVariantWeight", "InstanceType", "InitialInstanceCount",
            "ServerlessConfig")
    return {**{k: v[k] for k in keys if v.get(k) is not None}, "ModelName": model}


def _model_env(container: Mapping[str, Any]) -> dict[str, str]:
    """A container's environment (the deployment's ``environment`` setting, thread counts and
    all), which an update carries over to the new model."""
    return dict(container.get("Environment", {}))


def _settings_of(v: Mapping[str, Any], workers: str | None, local: bool) -> SageMakerSettings:
    """The settings that describe a deployed variant (for the ``Endpoint`` of an update)."""
    raw: dict[str, Any] = {"variant_name": v["VariantName"], "local": local}
    if workers:
        raw["model_server_workers"] = int(workers)
    if "ServerlessConfig" in v:
        sc = v["ServerlessConfig"]
        raw["serverless"] = {"memory_mb": sc["MemorySizeInMB"],
                             "max_concurrency": sc["MaxConcurrency"]}
    else:
        raw.update(instance_type=v["InstanceType"], instance_count=v["InitialInstanceCount"])
    return SageMakerSettings.parse(raw)
