"""The SageMaker target: real-time and serverless endpoints, blue/green updates, autoscaling."""

from deployers.sagemaker.deployer import SageMakerDeployer
from deployers.sagemaker.invoker import SageMakerInvoker
from deployers.sagemaker.settings import SageMakerSettings

__all__ = ["SageMakerDeployer", "SageMakerInvoker", "SageMakerSettings"]
