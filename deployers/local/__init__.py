"""The on-premise target: ``mlflow models serve`` instances on this machine, behind nginx."""

from deployers.local.deployer import LocalDeployer, default_state_dir
from deployers.local.settings import LocalSettings

__all__ = ["LocalDeployer", "LocalSettings", "default_state_dir"]
