"""Local stand-ins for the AWS data planes, for runs whose AWS control plane is on this machine.

With moto as the control plane, nothing runs a model: the stand-ins do, with the project's real
artifacts and AWS's own wire protocols, so the deployers and invokers are the same code as
against AWS.

- ``LocalLambda`` (``lambda_service``): the Invoke API in front (``lambda_invoke_api``), the
  Runtime API behind, each execution environment a real ``awslambdaric`` process
  (``lambda_environment``) in a cgroup shaped like Lambda's (``lambda_shape``: memory_mb / 1,769
  vCPU, Lambda's visible cores, memory_mb of memory).
- ``LocalTraining`` (``sagemaker_training``): a ``CreateTrainingJob`` request run on this machine
  as SageMaker's PyTorch training container runs it (channels from S3, the entry program with the
  ``SM_*`` environment, logs to CloudWatch Logs, model and output archives back to S3).
- ``LocalSageMaker`` (``sagemaker_serving``): the endpoint's model archive read back from S3 and
  served by ``mlflow models serve`` behind an nginx data plane (``sagemaker_dataplane``), one
  server per instance, each in a cgroup shaped like its instance type.

State is owned one way: one ``StandIns`` object per process (``current()``) holds every
stand-in, starts each on first use and stops them all at interpreter exit (or ``close()``).
Nothing of theirs outlives the process except the Lambda function code kept under
``code_dir()``, the stand-in's copy of what AWS would store, so another process can host a
function that was deployed earlier. Resource shaping (``shaping``: a CPU quota, visible cores
and a memory limit per process group, through cgroup v1 or v2, found at run time; unshaped, with
one warning, without root or a writable cgroup tree) belongs here too.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path

from deployers.standins.lambda_service import FunctionConfig, LocalLambda
from deployers.standins.sagemaker_serving import LocalSageMaker
from deployers.standins.sagemaker_training import LocalTraining

__all__ = ["FunctionConfig", "LocalLambda", "LocalSageMaker", "LocalTraining", "StandIns",
           "code_dir", "current"]


def code_dir() -> Path:
    """Where the Lambda stand-in keeps function code (``$NISER_LAMBDA_STATE_DIR``, default
    ``~/.cache/niser-mlops/lambda``)."""
    env = os.environ.get("NISER_LAMBDA_STATE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "niser-mlops" / "lambda"


class StandIns:
    """The stand-ins of one process, each started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lambda: LocalLambda | None = None
        self._sagemaker: LocalSageMaker | None = None
        self._training: LocalTraining | None = None

    def aws_lambda(self) -> LocalLambda:
        """The local Lambda service (started now if it is not running)."""
        with self._lock:
            if self._lambda is None:
                self._lambda = LocalLambda()
            return self._lambda

    def sagemaker(self) -> LocalSageMaker:
        """The local SageMaker serving (its data plane starts with the first endpoint)."""
        with self._lock:
            if self._sagemaker is None:
                self._sagemaker = LocalSageMaker()
            return self._sagemaker

    def training(self) -> LocalTraining:
        """The local SageMaker training jobs."""
        with self._lock:
            if self._training is None:
                self._training = LocalTraining()
            return self._training

    def running_lambda(self) -> LocalLambda | None:
        """The local Lambda service if it runs, without starting it."""
        return self._lambda

    def running_sagemaker(self) -> LocalSageMaker | None:
        """The local SageMaker serving if it exists, without creating it."""
        return self._sagemaker

    def close(self) -> None:
        """Stop every stand-in of this process; idempotent."""
        with self._lock:
            lam, sm, training = self._lambda, self._sagemaker, self._training
            self._lambda = self._sagemaker = self._training = None
        if training is not None:
            training.close()
        if lam is not None:
            lam.close()
        if sm is not None:
            sm.close()


_current: StandIns | None = None
_current_lock = threading.Lock()


def current() -> StandIns:
    """This process's stand-ins (stopped at interpreter exit)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = StandIns()
            atexit.register(_current.close)
        return _current
