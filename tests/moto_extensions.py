"""``moto_server`` with what moto 5 lacks for the launcher, started as ``python moto_extensions.py -H ... -p ...``:
SageMaker's UpdateEndpoint, and binary request bodies for the SageMaker runtime (moto decodes every body as UTF-8,
so a JPEG sent to InvokeEndpoint or inline to InvokeEndpointAsync failed with HTTP 500).

The update does what AWS documents, and no more: the endpoint must exist and be InService, the new endpoint config must
exist, and, as AWS refuses it, the instance type of a variant registered with Application Auto Scaling may not
change (deregister it first). The endpoint then runs the new config (moto has no fleets to shift between).
"""

from __future__ import annotations

import base64
import sys

from moto.applicationautoscaling.models import applicationautoscaling_backends
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.sagemaker.exceptions import ValidationError
from moto.sagemaker.models import FakeEndpoint, SageMakerModelBackend
from moto.sagemaker.responses import SageMakerResponse
from moto.sagemakerruntime.responses import SageMakerRuntimeResponse
from moto.server import main


def update_endpoint(backend: SageMakerModelBackend, endpoint_name: str, endpoint_config_name: str) -> str:
    if endpoint_name not in backend.endpoints:
        raise ValidationError(
            message="Could not find endpoint "
            f"'{FakeEndpoint.arn_formatter(endpoint_name, backend.account_id, backend.region_name)}'."
        )
    endpoint = backend.endpoints[endpoint_name]
    if endpoint.endpoint_status != "InService":
        raise ValidationError(message=f"Cannot update in-progress endpoint '{endpoint.arn}'.")
    new = backend.describe_endpoint_config(endpoint_config_name)  # ValidationError when it does not exist
    old = {
        v["VariantName"]: v.get("InstanceType")
        for v in backend.describe_endpoint_config(endpoint.endpoint_config_name)["ProductionVariants"]
    }
    targets = applicationautoscaling_backends[backend.account_id][backend.region_name].targets.get(
        "sagemaker:variant:DesiredInstanceCount", {}
    )
    for variant in new["ProductionVariants"]:
        registered = f"endpoint/{endpoint_name}/variant/{variant['VariantName']}" in targets
        if registered and old.get(variant["VariantName"]) != variant.get("InstanceType"):
            raise ValidationError(
                message=f"The variant {variant['VariantName']} of endpoint {endpoint_name} is registered with "
                "Application Auto Scaling; "
                "deregister it before changing its instance type."
            )
    endpoint.endpoint_config_name = endpoint_config_name
    endpoint.production_variants = endpoint._process_production_variants(new["ProductionVariants"])
    endpoint.data_capture_config = new.get("DataCaptureConfig")
    endpoint.last_modified_time = utcnow()
    return endpoint.arn


def update_endpoint_response(self: SageMakerResponse) -> ActionResult:
    arn = update_endpoint(
        self.sagemaker_backend, self._get_param("EndpointName"), self._get_param("EndpointConfigName")
    )
    return ActionResult({"EndpointArn": arn})


SageMakerResponse.update_endpoint = update_endpoint_response


def invoke_endpoint_binary(self: SageMakerRuntimeResponse):
    """moto's InvokeEndpoint keys its answers by a JSON dump of the request, body included: give it the body as
    base64."""
    if isinstance(self.body, bytes):
        self.body = base64.b64encode(self.body).decode("ascii")
    return original_invoke_endpoint(self)


SageMakerRuntimeResponse.use_raw_body = True
original_invoke_endpoint = SageMakerRuntimeResponse.invoke_endpoint
SageMakerRuntimeResponse.invoke_endpoint = invoke_endpoint_binary

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
