"""SageMaker training jobs: the settings, the job's S3 inputs and role, the job itself, its logs
and its end. Model-agnostic: the caller brings the dataset file, the source archive with its
entry program, and the hyperparameters.

Promises:

- ``TrainingSettings`` refuses a bad value (unknown instance type, count < 1, runtime <= 0, a
  spot wait shorter than the runtime, a malformed image, role or bucket) before any AWS call,
  naming the field.
- ``run_job`` uploads the dataset under a content-hashed key (skipped when the object is already
  there) and the source archive likewise, creates the job's execution role (unless one is given;
  it may read the job's inputs, write its outputs and checkpoints, write its logs and pull its
  image, and it is deleted when the job ends), creates the training job, streams its CloudWatch
  log lines to ``on_line`` while it waits, and returns the job's last description with its
  billable seconds and the ``result.json`` of its output archive. With a local control plane (the
  moto server) the job runs on this machine (``deployers.standins.sagemaker_training``): the same
  calls, the same S3 layout and log group. Interrupted (an exception, SIGTERM, a cancel) it stops
  the job and deletes the role it made before re-raising.
- ``image_uri`` is the explicit ``image_uri``, else the AWS PyTorch training container for the
  newest framework version the ``sagemaker`` SDK knows (``pip install -e '.[aws]'``) up to the
  installed torch, looked up offline; without the SDK, a real account needs ``image_uri``, and the
  local stand-in (which runs no image) records ``LOCAL_IMAGE``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import tarfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deployers import aws, roles, standins
from deployers.base import DeployerError, Undo
from deployers.ownership import Owner
from deployers.sagemaker.settings import ECR_IMAGE
from deployers.sagemaker.training_settings import (
    TRAINING_INSTANCE_TYPES as TRAINING_INSTANCE_TYPES,  # re-exported
)
from deployers.sagemaker.training_settings import TrainingSettings as TrainingSettings

PREFIX = "niser-mlops/training"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
CHECKPOINT_PATH = "/opt/ml/checkpoints"
TERMINAL = ("Completed", "Failed", "Stopped")
LOCAL_IMAGE = "local/niser-mlops-training:this-interpreter"
RESULT_FILE = "result.json"
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@dataclass
class JobOutcome:
    """A finished job: its description, billable seconds, output and whether it ran here."""

    name: str
    description: dict[str, Any]
    billable_seconds: int
    result: dict[str, Any] | None
    local: bool
    image: str
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.description["TrainingJobStatus"])

    @property
    def failure_reason(self) -> str:
        return str(self.description.get("FailureReason") or "")


def job_name(prefix: str = "niser-train") -> str:
    """A fresh job name (SageMaker: at most 63 letters, digits and hyphens)."""
    name = f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if not _JOB_NAME.match(name):
        raise ValueError(f"training job name {name!r}: letters, digits and hyphens, <= 63")
    return name


def image_uri(s: TrainingSettings, region: str, torch_version: str, local: bool) -> str:
    """The training image (module docstring); ``DeployerError`` saying what to do when none."""
    if s.image_uri:
        return s.image_uri
    try:
        from sagemaker.core import image_uris  # type: ignore[import-not-found]  # SDK v3
    except ImportError:
        try:
            from sagemaker import image_uris  # type: ignore[import-not-found,no-redef]  # v2
        except ImportError:
            image_uris = None
    if image_uris is None:
        if local:
            return LOCAL_IMAGE
        raise DeployerError("training.image_uri is needed: install the sagemaker SDK (pip "
                            "install -e '.[aws]') to look up the AWS PyTorch training "
                            "container, or give its URI") from None
    wanted = tuple(int(x) for x in torch_version.split("+")[0].split(".")[:2])
    known = image_uris.config_for_framework("pytorch")["training"]["versions"]
    fits = sorted((v for v in known if tuple(int(x) for x in v.split(".")[:2]) <= wanted),
                  key=lambda v: tuple(int(x) for x in v.split(".")))
    if not fits:
        raise DeployerError(f"the sagemaker SDK knows no PyTorch training image up to torch "
                            f"{torch_version}; give training.image_uri")
    version = fits[-1]
    py = sorted(known[version]["py_versions"])[-1]
    return str(image_uris.retrieve("pytorch", region=region, version=version, py_version=py,
                                   instance_type=s.instance_type, image_scope="training"))


def content_key(path: Path, kind: str) -> str:
    """``niser-mlops/training/<kind>/<sha256 of the file, 16 hex>/<file name>``."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{PREFIX}/{kind}/{digest}/{path.name}"


def upload_once(path: Path, bucket: str, key: str) -> tuple[str, bool]:
    """Upload ``path`` to ``s3://bucket/key`` unless an object is there; (URI, uploaded?)."""
    s3 = aws.client("s3")
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return f"s3://{bucket}/{key}", False
    except ClientError as exc:
        if aws.error_code(exc) not in {"404", "NoSuchKey", "NotFound"}:
            raise
    s3.upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}", True


def execution_policy(partition: str, region: str, account: str, bucket: str,
                     image: str) -> dict[str, Any]:
    """The job role's inline policy: its S3 prefix, its log group, its image, its metrics."""
    logs = f"arn:{partition}:logs:{region}:{account}:log-group:{LOG_GROUP}"
    statements: list[dict[str, Any]] = [
        {"Sid": "InputsOutputsCheckpoints", "Effect": "Allow",
         "Action": ["s3:GetObject", "s3:PutObject"],
         "Resource": [f"arn:{partition}:s3:::{bucket}/{PREFIX}/*"]},
        {"Sid": "ListItsPrefix", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [f"arn:{partition}:s3:::{bucket}"],
         "Condition": {"StringLike": {"s3:prefix": [f"{PREFIX}/*"]}}},
        {"Sid": "WriteJobLogs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents",
                    "logs:DescribeLogStreams"], "Resource": [logs, f"{logs}:*"]},
        {"Sid": "MetricsHaveNoResourceLevelPermission", "Effect": "Allow",
         "Action": ["cloudwatch:PutMetricData", "ecr:GetAuthorizationToken"], "Resource": ["*"]},
    ]
    match = ECR_IMAGE.match(image)
    if match is not None:
        statements.append({"Sid": "PullTrainingImage", "Effect": "Allow",
                           "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                      "ecr:BatchCheckLayerAvailability"],
                           "Resource": [f"arn:{partition}:ecr:{match['region']}:"
                                        f"{match['account']}:repository/{match['repository']}"]})
    return {"Version": "2012-10-17", "Statement": statements}


def create_request(name: str, s: TrainingSettings, image: str, role: str, train_uri: str,
                   source_uri: str, program: str, bucket: str,
                   hyperparameters: Mapping[str, Any], environment: Mapping[str, str],
                   tags: Mapping[str, str]) -> dict[str, Any]:
    """The ``CreateTrainingJob`` request. Hyperparameter values are JSON text, as the
    SageMaker SDK writes them (the training toolkit decodes them into ``SM_HPS``)."""
    hps = {k: json.dumps(v) for k, v in hyperparameters.items()}
    hps.update(sagemaker_program=json.dumps(program),
               sagemaker_submit_directory=json.dumps(source_uri),
               sagemaker_region=json.dumps(aws.region()))
    env = dict(environment)
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": s.max_runtime_s}
    request: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "RoleArn": role, "HyperParameters": hps,
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": train_uri,
            "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": f"s3://{bucket}/{PREFIX}/jobs"},
        "ResourceConfig": {"InstanceType": s.instance_type, "InstanceCount": s.instance_count,
                           "VolumeSizeInGB": s.volume_gb},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": s.spot,
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }
    if s.spot:
        stopping["MaxWaitTimeInSeconds"] = s.max_wait_s or 2 * s.max_runtime_s
    if s.keeps_checkpoints:
        request["CheckpointConfig"] = {"S3Uri": f"s3://{bucket}/{PREFIX}/checkpoints/{name}",
                                       "LocalPath": CHECKPOINT_PATH}
        env["NISER_CHECKPOINT_DIR"] = CHECKPOINT_PATH
    request["Environment"] = env
    return request


def describe(name: str, local: bool) -> dict[str, Any]:
    """``DescribeTrainingJob``; for a job run on this machine, with the stand-in's status,
    failure reason, times and billable seconds (the control plane does not run jobs)."""
    desc: dict[str, Any] = aws.client("sagemaker").describe_training_job(TrainingJobName=name)
    if local:
        known = standins.current().training().status(name)
        if known is not None:
            start, end = known.timestamps()
            desc.update(TrainingJobStatus=("InProgress" if known.status == "Stopping"
                                           else known.status),
                        SecondaryStatus=known.status, TrainingStartTime=start)
            desc.pop("FailureReason", None)
            for key in ("TrainingEndTime", "BillableTimeInSeconds"):
                desc.pop(key, None)
            if known.failure_reason:
                desc["FailureReason"] = known.failure_reason
            if end is not None:
                desc.update(TrainingEndTime=end, BillableTimeInSeconds=known.billable_seconds)
    return desc


def billable_seconds(desc: Mapping[str, Any]) -> int:
    """``BillableTimeInSeconds`` (spot savings included), else run time x instance count."""
    if desc.get("BillableTimeInSeconds") is not None:
        return int(desc["BillableTimeInSeconds"])
    start, end = desc.get("TrainingStartTime"), desc.get("TrainingEndTime")
    if start is None or end is None:
        return 0
    count = int(desc.get("ResourceConfig", {}).get("InstanceCount", 1))
    return max(0, round((end - start).total_seconds())) * count


class LogTail:
    """The job's CloudWatch log lines, each returned once (streams ``<job>/...``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tokens: dict[str, str | None] = {}

    def new_lines(self) -> list[str]:
        logs = aws.client("logs")
        try:
            streams = logs.describe_log_streams(logGroupName=LOG_GROUP,
                                                logStreamNamePrefix=f"{self.name}/")
        except ClientError as exc:
            if aws.absent(exc):
                return []
            raise
        out: list[str] = []
        for stream in streams.get("logStreams", []):
            sname = stream["logStreamName"]
            kwargs: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": sname,
                                      "startFromHead": True}
            if self._tokens.get(sname):
                kwargs["nextToken"] = self._tokens[sname]
            got = logs.get_log_events(**kwargs)
            out += [e["message"] for e in got.get("events", [])]
            self._tokens[sname] = got.get("nextForwardToken")
        return out


def read_result(desc: Mapping[str, Any]) -> dict[str, Any] | None:
    """``result.json`` of the job's ``output.tar.gz``; ``None`` when the job wrote none."""
    out = f"{desc['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{desc['TrainingJobName']}"
    bucket, _, key = f"{out}/output/output.tar.gz".removeprefix("s3://").partition("/")
    try:
        blob = aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if aws.error_code(exc) in {"404", "NoSuchKey"}:
            return None
        raise
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        try:
            member = tar.extractfile(RESULT_FILE)
        except KeyError:
            return None
        return None if member is None else dict(json.loads(member.read()))


@contextlib.contextmanager
def _stopped_on_interrupt(name: str, local: bool) -> Iterator[None]:
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            aws.client("sagemaker").stop_training_job(TrainingJobName=name)
        if local:
            standins.current().training().stop(name)
        raise


def wait(name: str, local: bool, on_line: Callable[[str], None], timeout_s: float,
         poll_s: float = 2.0, sleep: Callable[[float], None] = time.sleep,
         now: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll until the job ends, passing each new log line to ``on_line``; its description."""
    tail, deadline, last = LogTail(name), now() + timeout_s, ""
    while True:
        desc = describe(name, local)
        for line in tail.new_lines():
            on_line(line)
        status = str(desc["TrainingJobStatus"])
        if status != last:
            on_line(f"[{name}] {status} ({desc.get('SecondaryStatus', '')})")
            last = status
        if status in TERMINAL:
            return desc
        if now() > deadline:
            raise DeployerError(f"training job {name} still {status} after {timeout_s:.0f} s")
        sleep(poll_s)


def run_job(dataset: Path, source: Path, program: str, hyperparameters: Mapping[str, Any],
            environment: Mapping[str, str], s: TrainingSettings, owner: Owner,
            torch_version: str, on_line: Callable[[str], None],
            name: str | None = None) -> JobOutcome:
    """Upload, create the role and the job, wait, clean up (module docstring)."""
    from deployers.sagemaker import resources as res

    local = aws.endpoint_is_local("sagemaker")
    acct = res.identity()
    bucket = s.bucket or res.default_bucket(acct)
    image = image_uri(s, acct.region, torch_version, local)
    name = name or job_name()
    undo = Undo(gone=aws.absent, owner=owner)
    tags = {**owner.tags(), res.TAG_BUCKET: bucket}
    try:
        res.ensure_bucket(bucket, acct.region, Undo())  # shared with the deployer: kept
        train_uri, fresh = upload_once(dataset, bucket, content_key(dataset, "datasets"))
        on_line(f"dataset {'uploaded to' if fresh else 'already at'} {train_uri}")
        source_uri, _ = upload_once(source, bucket, content_key(source, "source"))
        role = s.role_arn or roles.create_owned(undo, roles.role_name(name, "training"),
                                                lambda: roles.create_role(
            roles.role_name(name, "training"), "sagemaker.amazonaws.com", acct.account,
            "training", execution_policy(acct.partition, acct.region, acct.account, bucket,
                                         image),
            f"SageMaker execution role of training job {name} (niser-mlops)", tags))
        request = create_request(name, s, image, role, train_uri.rsplit("/", 1)[0] + "/",
                                 source_uri, program, bucket, hyperparameters, environment, tags)
        _create(request, fresh_role=s.role_arn is None and not local)
        on_line(f"training job {name} created: {s.instance_count} x {s.instance_type}, image "
                f"{image}{' (run on this machine by the local stand-in)' if local else ''}")
        with _stopped_on_interrupt(name, local):
            if local:
                standins.current().training().start(request)
            timeout = s.max_runtime_s + (s.max_wait_s or 2 * s.max_runtime_s if s.spot else 0)
            desc = wait(name, local, on_line, timeout_s=timeout + 600)
    finally:
        problems = undo.run()  # the role is the job's only: it goes when the job has ended
        if problems:
            on_line("cleanup problems: " + "; ".join(problems))
    result = read_result(desc) if desc["TrainingJobStatus"] == "Completed" else None
    return JobOutcome(name, desc, billable_seconds(desc), result, local, image,
                      {"train": train_uri, "source": source_uri})


def _create(request: Mapping[str, Any], fresh_role: bool) -> None:
    """``CreateTrainingJob``; a role made a moment ago may not be assumable yet: retried."""
    sm = aws.client("sagemaker")
    deadline = time.monotonic() + (roles.ROLE_PROPAGATION_S if fresh_role else 0.0)
    while True:
        try:
            sm.create_training_job(**request)
            return
        except ClientError as exc:
            propagating = "assume" in str(exc).lower() and aws.error_code(exc) == \
                "ValidationException"
            if not propagating or time.monotonic() > deadline:
                raise
            time.sleep(5.0)
