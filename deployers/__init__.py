"""How a registered model gets behind an endpoint, how to call it, and what it costs.

Layout: ``base`` (the interface, the deploy policy, the exception tree), ``registry`` (deployers
as entry points), ``aws`` (the one boto3 seam), ``roles`` (IAM roles of the AWS targets),
``wire`` (the scoring request/response format), ``http`` and ``procs`` (calling and running
scoring servers), ``balancer`` (nginx), ``mlflow_target`` (the deployers as MLflow deployment
targets); one subpackage per target (``local``, ``sagemaker``, ``aws_lambda``; ``inprocess`` is one
module); ``standins``: the local stand-ins of the AWS data planes.
"""

from deployers.base import (
    CostDrivers,
    Deployer,
    DeployerError,
    DeploymentFailed,
    Description,
    Endpoint,
    InvocationError,
    Invoker,
    Prediction,
    Settings,
    SettingsError,
    UnknownDeployerError,
)
from deployers.registry import available, get_deployer

__all__ = [
    "CostDrivers",
    "Deployer",
    "DeployerError",
    "DeploymentFailed",
    "Description",
    "Endpoint",
    "InvocationError",
    "Invoker",
    "Prediction",
    "Settings",
    "SettingsError",
    "UnknownDeployerError",
    "available",
    "get_deployer",
]
