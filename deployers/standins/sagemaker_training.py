"""A local SageMaker training job: the job a ``CreateTrainingJob`` request asks for, run on this
machine, for runs whose SageMaker control plane is the moto server (which records a job and
calls it ``Completed`` at once, without running anything).

``LocalTraining.start(request)`` takes the very request the control plane received and runs it
as SageMaker's PyTorch training container would, in a temporary job folder that plays
``/opt/ml``:

- every input channel's ``S3Uri`` prefix is downloaded (from moto's S3) into
  ``input/data/<channel>``; the source archive of the ``sagemaker_submit_directory``
  hyperparameter is unpacked into ``code`` and its ``sagemaker_program`` is run there by this
  interpreter (the container's ``requirements.txt`` step is skipped: this interpreter already has
  the packages), in its own session, marked as a ``sagemaker-training`` process;
- the environment is the request's ``Environment`` (any value under ``/opt/ml/`` mapped into the
  job folder) over this process's ``PATH``, ``HOME``, locale and ``AWS_*`` variables only (in AWS
  the job gets its role's credentials; nothing else of the caller reaches it), plus the training
  toolkit's ``SM_*`` variables: ``SM_CHANNEL_<NAME>``, ``SM_HPS`` (hyperparameters, each value
  JSON-decoded when it is JSON), ``SM_MODEL_DIR``,
  ``SM_OUTPUT_DATA_DIR``, ``SM_OUTPUT_DIR``, ``SM_NUM_GPUS`` (0: no GPU is given to the job),
  ``SM_CURRENT_HOST`` / ``SM_HOSTS`` (one host, ``algo-1``, whatever ``InstanceCount`` says);
- its output lines go to CloudWatch Logs as SageMaker writes them (group
  ``/aws/sagemaker/TrainingJobs``, stream ``<job>/algo-1-<epoch seconds>``);
- checkpoints (``CheckpointConfig``) are downloaded before the start and uploaded after the end;
- at the end ``model`` is uploaded as ``<S3OutputPath>/<job>/output/model.tar.gz`` and
  ``output/data`` as ``output.tar.gz`` beside it; a non-zero exit is ``Failed`` with the content of
  ``output/failure`` (or the exit status) as the reason; ``stop`` ends the process: ``Stopped``.

``status(name)`` is what this machine knows of a job (``None``: not run here): its status, failure
reason, start and end, and the billable seconds (run time x instance count; nothing is billed,
this is what SageMaker would bill on demand). The record is also kept as JSON under
``state_dir()``, so another process can read it. The job is not shaped like its instance type:
it runs on this machine's cores, so its duration is not the instance's (say so with any figure).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deployers import aws, procs

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
HOST = "algo-1"
TERMINAL = ("Completed", "Failed", "Stopped")
_BASE_VARS = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ"})


def state_dir() -> Path:
    """Where job records are kept (``$NISER_TRAINING_STATE_DIR``, default
    ``~/.cache/niser-mlops/training``)."""
    env = os.environ.get("NISER_TRAINING_STATE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "niser-mlops" / "training"


@dataclass
class JobStatus:
    """What this machine knows of one job."""

    name: str
    status: str
    started: float
    ended: float | None = None
    failure_reason: str = ""
    instance_count: int = 1
    log_stream: str = ""

    @property
    def billable_seconds(self) -> int:
        """Run time x instances, rounded up to whole seconds (0 while it runs)."""
        if self.ended is None:
            return 0
        return int(-(-(self.ended - self.started) // 1)) * self.instance_count

    def timestamps(self) -> tuple[dt.datetime, dt.datetime | None]:
        """Start and end as aware datetimes."""
        start = dt.datetime.fromtimestamp(self.started, dt.UTC)
        end = None if self.ended is None else dt.datetime.fromtimestamp(self.ended, dt.UTC)
        return start, end


def _s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _download_prefix(uri: str, dest: Path) -> int:
    """Every object under ``uri`` into ``dest`` (keys relative to the prefix); returns the count."""
    s3 = aws.client("s3")
    bucket, prefix = _s3_parts(uri)
    n = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(prefix):].lstrip("/") or Path(obj["Key"]).name
            target = (dest / rel).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise ValueError(f"S3 key {obj['Key']!r} would land outside {dest}")
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            n += 1
    return n


def _upload_tree(folder: Path, uri: str) -> None:
    s3 = aws.client("s3")
    bucket, prefix = _s3_parts(uri)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix.rstrip('/')}/{path.relative_to(folder)}")


def _tar_upload(folder: Path, uri: str) -> None:
    archive = folder.parent / (folder.name + ".upload.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False)
    bucket, key = _s3_parts(uri)
    aws.client("s3").upload_file(str(archive), bucket, key)
    archive.unlink()


def _decoded(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


class LocalTraining:
    """Training jobs run on this machine (module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, JobStatus] = {}
        self._procs: dict[str, procs.ProcessRecord] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self, request: Mapping[str, Any]) -> JobStatus:
        """Run the job of ``request`` (a ``CreateTrainingJob`` request) in the background."""
        name = str(request["TrainingJobName"])
        count = int(request.get("ResourceConfig", {}).get("InstanceCount", 1))
        job = JobStatus(name, "InProgress", time.time(), instance_count=count,
                        log_stream=f"{name}/{HOST}-{int(time.time())}")
        with self._lock:
            if name in self._jobs:
                raise ValueError(f"training job {name!r} already runs on this machine")
            self._jobs[name] = job
        self._save(job)
        thread = threading.Thread(target=self._run, args=(dict(request), job), daemon=True,
                                  name=f"training-{name}")
        self._threads[name] = thread
        thread.start()
        return job

    def status(self, name: str) -> JobStatus | None:
        """The job's record: this process's, else the one kept under ``state_dir()``."""
        with self._lock:
            if name in self._jobs:
                return JobStatus(**asdict(self._jobs[name]))
        path = state_dir() / f"{name}.json"
        if not path.is_file():
            return None
        return JobStatus(**json.loads(path.read_text()))

    def stop(self, name: str) -> None:
        """End the job's process (the job ends ``Stopped``); nothing when it is not running."""
        with self._lock:
            record = self._procs.get(name)
            job = self._jobs.get(name)
            if job is not None and job.status == "InProgress":
                job.status = "Stopping"
        if record is not None:
            procs.end(record)

    def wait(self, name: str, timeout_s: float | None = None) -> None:
        """Block until the job's background thread is done."""
        thread = self._threads.get(name)
        if thread is not None:
            thread.join(timeout_s)

    def close(self) -> None:
        """Stop every job still running; idempotent."""
        for name in list(self._procs):
            self.stop(name)
        for name in list(self._threads):
            self.wait(name, 30.0)

    def _save(self, job: JobStatus) -> None:
        folder = state_dir()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{job.name}.json.tmp"
        tmp.write_text(json.dumps(asdict(job)))
        tmp.replace(folder / f"{job.name}.json")

    def _finish(self, job: JobStatus, status: str, reason: str = "") -> None:
        with self._lock:
            job.status = "Stopped" if job.status == "Stopping" else status
            job.failure_reason = reason[:1024] if job.status == "Failed" else ""
            job.ended = time.time()
        self._save(job)

    def _run(self, request: dict[str, Any], job: JobStatus) -> None:
        root = Path(tempfile.mkdtemp(prefix=f"niser-training-{job.name[:40]}-"))
        try:
            status, reason = self._execute(request, job, root)
        except Exception as exc:  # the job fails; the reason says why, as SageMaker's would
            status, reason = "Failed", f"ClientError: {type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._procs.pop(job.name, None)
        self._finish(job, status, reason)
        shutil.rmtree(root, ignore_errors=True)

    def _environment(self, request: Mapping[str, Any], root: Path,
                     channels: Mapping[str, Path]) -> dict[str, str]:
        hps = {k: _decoded(str(v)) for k, v in (request.get("HyperParameters") or {}).items()}
        given = {k: (str(root / v.removeprefix("/opt/ml/")) if v.startswith("/opt/ml/") else v)
                 for k, v in (request.get("Environment") or {}).items()}
        sm = {f"SM_CHANNEL_{c.upper()}": str(p) for c, p in channels.items()}
        sm.update(SM_HPS=json.dumps(hps), SM_MODEL_DIR=str(root / "model"),
                  SM_OUTPUT_DATA_DIR=str(root / "output" / "data"),
                  SM_OUTPUT_DIR=str(root / "output"), SM_NUM_GPUS="0",
                  SM_CHANNELS=json.dumps(sorted(channels)), SM_CURRENT_HOST=HOST,
                  SM_HOSTS=json.dumps([HOST]), SM_INPUT_DIR=str(root / "input"))
        # what a container starts with: no variable of this process but the basics and the AWS
        # ones (in AWS the job's role credentials and region; here the moto endpoint)
        base = {k: v for k, v in os.environ.items() if k in _BASE_VARS or k.startswith("AWS_")}
        return {**base, **given, **sm}

    def _execute(self, request: dict[str, Any], job: JobStatus, root: Path) -> tuple[str, str]:
        channels: dict[str, Path] = {}
        for ch in request.get("InputDataConfig") or []:
            path = root / "input" / "data" / ch["ChannelName"]
            path.mkdir(parents=True, exist_ok=True)
            _download_prefix(ch["DataSource"]["S3DataSource"]["S3Uri"], path)
            channels[ch["ChannelName"]] = path
        for sub in ("model", "output/data", "code", "checkpoints"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        hps = request.get("HyperParameters") or {}
        source = str(_decoded(hps.get("sagemaker_submit_directory", '""')))
        program = str(_decoded(hps.get("sagemaker_program", '""')))
        if not source.startswith("s3://") or not program:
            return "Failed", ("AlgorithmError: the hyperparameters sagemaker_submit_directory "
                              "(an s3:// source archive) and sagemaker_program are required")
        archive = root / "sourcedir.tar.gz"
        aws.client("s3").download_file(*_s3_parts(source), str(archive))
        with tarfile.open(archive) as tar:
            tar.extractall(root / "code", filter="data")
        checkpoint = request.get("CheckpointConfig")
        if checkpoint:
            _download_prefix(checkpoint["S3Uri"], root / "checkpoints")
        env = self._environment(request, root, channels)
        log = root / "job.log"
        record, proc = procs.spawn([sys.executable, program], env, log, cwd=root / "code",
                                   role="sagemaker-training", deployment=job.name, workdir=root)
        with self._lock:
            self._procs[job.name] = record
        self._pump(job, proc, log)
        if checkpoint:
            _upload_tree(root / "checkpoints", checkpoint["S3Uri"])
        out = f"{request['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job.name}/output"
        _tar_upload(root / "output" / "data", f"{out}/output.tar.gz")
        if proc.returncode != 0:
            failure = root / "output" / "failure"
            reason = failure.read_text().strip() if failure.is_file() else ""
            return "Failed", ("AlgorithmError: " + (reason or f"the training script exited "
                                                     f"with status {proc.returncode}"))
        _tar_upload(root / "model", f"{out}/model.tar.gz")
        return "Completed", ""

    def _pump(self, job: JobStatus, proc: subprocess.Popen[bytes], log: Path) -> None:
        """Copy the job's output lines to CloudWatch Logs until the process exits."""
        logs = aws.client("logs")
        with _ignore_exists():
            logs.create_log_group(logGroupName=LOG_GROUP)
        with _ignore_exists():
            logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=job.log_stream)
        with log.open("rb") as f:
            while True:
                done = proc.poll() is not None
                lines = [ln.decode(errors="replace").rstrip("\n") for ln in f.readlines()]
                events = [{"timestamp": int(time.time() * 1000), "message": ln[:8000]}
                          for ln in lines if ln.strip()]
                for start in range(0, len(events), 1000):
                    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=job.log_stream,
                                        logEvents=events[start:start + 1000])
                if done:
                    return
                time.sleep(0.2)


class _ignore_exists:
    """``with _ignore_exists():`` swallows CloudWatch's ResourceAlreadyExistsException."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        return exc is not None and aws.error_code(exc) == "ResourceAlreadyExistsException"
