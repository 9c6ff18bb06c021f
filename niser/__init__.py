"""The NISER session-based recommender: data, model, training, evaluation, serving.

Everything that knows torch and the model lives here, including what a deployment target
carries of it: the MLflow pyfunc (``pyfunc``, ``registry``), the ONNX export (``onnx_export``)
and the Lambda function code (``lambda_handler``, ``lambda_bundle``, ``lambda_image/``).
"""
