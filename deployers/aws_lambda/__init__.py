"""The Lambda target: the model's ONNX function code as a zip (or a container image)."""

from deployers.aws_lambda.deployer import LambdaDeployer
from deployers.aws_lambda.invoker import LambdaInvoker, parse_report
from deployers.aws_lambda.settings import LambdaSettings

__all__ = ["LambdaDeployer", "LambdaInvoker", "LambdaSettings", "parse_report"]
