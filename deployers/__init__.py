"""How a registered model gets behind an endpoint, how to call it, and what it costs."""

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
)
from deployers.registry import UnknownDeployerError, available, get_deployer

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
