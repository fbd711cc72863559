"""``python -m serve.mms_backend``: multi-model-server with our handler service, started by sagemaker-inference.

The multi-model front (``serve.mme``) runs this on a private port; sagemaker-inference writes the MMS
configuration from the SageMaker environment variables (workers, timeout, payload size) and supervises MMS.
"""

from sagemaker_inference import model_server

from serve.mms_service import ENTRY_POINT

if __name__ == "__main__":
    model_server.start_model_server(handler_service=ENTRY_POINT)
