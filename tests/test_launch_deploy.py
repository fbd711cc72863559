"""`deploy`, `invoke` and `transform` against moto_server (requests read back), and `invoke` against the real serving
container."""

import json
import subprocess

import boto3
import botocore.exceptions
import pytest
from aws_stand_in import environment, queue_answers, recorded_requests, run_cli

from sagemaker_launch import api_model, cli, deploy, invoke, training
from sagemaker_launch import aws as aws_module
from sagemaker_launch.errors import LaunchError

REGION = "us-east-1"
SERVE_IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/byoc-vision-serve:0.1.0"
TRAIN_IMAGE = SERVE_IMAGE.replace("serve", "train")
ROLE = "arn:aws:iam::123456789012:role/byoc-sagemaker-jobs"
MODEL = ["--image", SERVE_IMAGE, "--role", ROLE, "--region", REGION]


@pytest.fixture(scope="module")
def aws(aws):
    """conftest's moto_server, with what this module's tests start from."""
    argv = [
        "train",
        "--name",
        "byoc-deploy-src",
        "--image",
        TRAIN_IMAGE,
        "--role",
        ROLE,
        "--region",
        REGION,
        "--output",
        "s3://byoc-bucket/runs",
        "--channel",
        "train=s3://byoc-bucket/data/train",
    ]
    assert cli.main(argv) == 0
    # moto names every tuning job's best training job FakeTrainingJobName (a name our launcher would refuse): made
    # directly
    request = training.training_request(cli.build_parser()[0].parse_args(argv), REGION)
    sm().create_training_job(**{**request, "TrainingJobName": "FakeTrainingJobName"})
    yield aws


def sm():
    return boto3.client("sagemaker", region_name=REGION)


def deployed(endpoint: str) -> tuple[dict, dict, dict]:
    """(endpoint, its config, its model) as moto describes them."""
    described = sm().describe_endpoint(EndpointName=endpoint)
    config = sm().describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    model = sm().describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    return described, config, model


def last_request(env: dict, target: str) -> dict:
    """The JSON body of the last request with this X-Amz-Target operation (for fields moto does not keep)."""
    return json.loads(recorded_requests(env, target=target)[-1]["body"])


def test_deploy_a_training_job_with_data_capture_and_auto_scaling(aws, capsys):
    argv = [
        "deploy",
        "--training-job",
        "byoc-deploy-src",
        *MODEL,
        "--name",
        "byoc-ep-capture",
        "--instance-type",
        "ml.c5.xlarge",
        "--instance-count",
        "2",
        "--env",
        "SERVE_RUNTIME=onnxruntime",
        "--data-capture",
        "s3://byoc-bucket/capture",
        "--capture-percent",
        "50",
        "--min-instances",
        "1",
        "--max-instances",
        "4",
        "--target-invocations",
        "200",
        "--tag",
        "team=vision",
        "--poll-seconds",
        "0.1",
    ]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    endpoint, config, model = deployed("byoc-ep-capture")
    artifacts = sm().describe_training_job(TrainingJobName="byoc-deploy-src")["ModelArtifacts"]["S3ModelArtifacts"]
    assert (
        endpoint["EndpointStatus"] == "InService"
        and "arn:aws:sagemaker:us-east-1:123456789012:endpoint/byoc-ep-capture" in out
    )
    assert model["PrimaryContainer"]["Image"] == SERVE_IMAGE and model["PrimaryContainer"]["ModelDataUrl"] == artifacts
    assert (
        model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "6", "SERVE_RUNTIME": "onnxruntime"}
        and model["ExecutionRoleArn"] == ROLE
    )
    variant = config["ProductionVariants"][0]
    assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        "AllTraffic",
        "ml.c5.xlarge",
        2,
    )
    assert "InferenceAmiVersion" not in last_request(aws, "CreateEndpointConfig")["ProductionVariants"][0]
    capture = config["DataCaptureConfig"]
    assert (
        capture["EnableCapture"] is True
        and capture["InitialSamplingPercentage"] == 50
        and capture["DestinationS3Uri"] == "s3://byoc-bucket/capture"
    )
    assert capture["CaptureOptions"] == [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]
    tags = {t["Key"]: t["Value"] for t in sm().list_tags(ResourceArn=endpoint["EndpointArn"])["Tags"]}
    assert tags == {"created-by": "byoc-vision", "byoc-vision:kind": "endpoint", "team": "vision"}

    scaling = boto3.client("application-autoscaling", region_name=REGION)
    target = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
    assert (target["ResourceId"], target["ScalableDimension"], target["MinCapacity"], target["MaxCapacity"]) == (
        "endpoint/byoc-ep-capture/variant/AllTraffic",
        "sagemaker:variant:DesiredInstanceCount",
        1,
        4,
    )
    policy = scaling.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId="endpoint/byoc-ep-capture/variant/AllTraffic"
    )["ScalingPolicies"][0]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling" and tracking["TargetValue"] == 200
    assert tracking["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }
    assert (tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (300, 60)
    assert (
        "1-4 x ml.c5.xlarge: billed every hour while the endpoint exists" in out
        and "96 instance-hours a day at most" in out
    )


def test_deploy_the_best_job_of_a_tuning_job_on_a_gpu(aws, capsys, tmp_path):
    (tmp_path / "space.yaml").write_text("lr: {type: continuous, min: 0.0001, max: 0.1, scaling: Logarithmic}\n")
    code, _, err = run_cli(
        [
            "tune",
            "--name",
            "byoc-tuning-src",
            "--image",
            TRAIN_IMAGE,
            "--role",
            ROLE,
            "--region",
            REGION,
            "--output",
            "s3://byoc-bucket/runs",
            "--channel",
            "train=s3://byoc-bucket/data/train",
            "--search-space",
            str(tmp_path / "space.yaml"),
        ],
        capsys,
    )
    assert code == 0, err
    gpu = ["deploy", "--tuning-job", "byoc-tuning-src", *MODEL, "--instance-type", "ml.g4dn.xlarge"]
    code, _, err = run_cli(
        [*gpu, "--name", "byoc-ep-gpu-unknown"], capsys
    )  # the image is not on this machine: its CUDA is unknown
    assert (
        code == 2
        and "pass --image-cuda 12.x or 13.x" in err
        and not [m for m in sm().list_models()["Models"] if "gpu-unknown" in m["ModelName"]]
    )
    code, out, err = run_cli([*gpu, "--name", "byoc-ep-gpu", "--image-cuda", "12.6"], capsys)
    assert code == 0, err
    assert "best training job of byoc-tuning-src: FakeTrainingJobName" in out
    _, _config, model = deployed("byoc-ep-gpu")
    assert (
        model["PrimaryContainer"]["ModelDataUrl"]
        == sm().describe_training_job(TrainingJobName="FakeTrainingJobName")["ModelArtifacts"]["S3ModelArtifacts"]
    )
    assert (
        last_request(aws, "CreateEndpointConfig")["ProductionVariants"][0]["InferenceAmiVersion"]
        == "al2-ami-sagemaker-inference-gpu-3-1"
    )  # driver 550
    code, _, err = run_cli([*gpu, "--name", "byoc-ep-gpu13", "--image-cuda", "13.0"], capsys)
    assert code == 0, err
    assert (
        last_request(aws, "CreateEndpointConfig")["ProductionVariants"][0]["InferenceAmiVersion"]
        == "al2023-ami-sagemaker-inference-gpu-4-1"
    )  # driver 580
    code, _, err = run_cli(
        [*gpu, "--name", "byoc-ep-gpu-cpu-image", "--image-cuda", "none"], capsys
    )  # OpenVINO image: SageMaker's default host
    assert code == 0 and "InferenceAmiVersion" not in last_request(aws, "CreateEndpointConfig")["ProductionVariants"][0]


def test_the_image_labels_tell_its_cuda(serve_image):
    """`build` labels the images; the default serving image has no CUDA, a torch flavour's index says which."""
    from sagemaker_launch import gpu

    assert gpu.image_cuda(serve_image, None) == "none"
    assert (
        gpu.cuda_from_labels(
            {
                "com.byoc-vision.flavour": "torch",
                "com.byoc-vision.torch-index": "https://download.pytorch.org/whl/cu130",
            }
        )
        == "13.0"
    )
    assert gpu.cuda_from_labels({"com.byoc-vision.torch-index": "https://download.pytorch.org/whl/cu126"}) == "12.6"
    assert (
        gpu.cuda_from_labels(
            {"com.byoc-vision.flavour": "torch", "com.byoc-vision.torch-index": "https://download.pytorch.org/whl/cpu"}
        )
        == "none"
    )
    assert gpu.cuda_from_labels({"com.byoc-vision.torch-index": "https://pypi.org/simple"}) is None  # PyPI's build: ask


def test_serverless_asynchronous_and_multi_model_endpoints(aws, capsys):
    code, out, err = run_cli(
        [
            "deploy",
            "--model-data",
            "s3://byoc-bucket/m/model.tar.gz",
            *MODEL,
            "--name",
            "byoc-ep-serverless",
            "--serverless-memory-mb",
            "3072",
            "--serverless-concurrency",
            "10",
        ],
        capsys,
    )
    assert code == 0, err
    variant = deployed("byoc-ep-serverless")[1]["ProductionVariants"][0]
    assert (
        variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 10} and "InstanceType" not in variant
    )
    assert deployed("byoc-ep-serverless")[2]["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4"
    }  # serverless takes 4 MB
    assert "billed per request (duration x memory), nothing while idle" in out

    code, out, err = run_cli(
        [
            "deploy",
            "--model-data",
            "s3://byoc-bucket/m/model.tar.gz",
            *MODEL,
            "--name",
            "byoc-ep-async",
            "--async-output",
            "s3://byoc-bucket/async",
            "--async-concurrency",
            "2",
            "--min-instances",
            "0",
            "--max-instances",
            "2",
            "--poll-seconds",
            "0.1",
        ],
        capsys,
    )
    assert code == 0, err
    config = deployed("byoc-ep-async")[1]
    assert deployed("byoc-ep-async")[2]["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600",
        "SERVE_BODY_READ_TIMEOUT_SECONDS": "600",
        "SERVE_MAX_UPLOAD_BUFFER_MB": "2048",
    }  # an asynchronous request: up to 1 GB and an hour
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": "s3://byoc-bucket/async/results",
            "S3FailurePath": "s3://byoc-bucket/async/failures",
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2},
    }
    targets = scaling_client().describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=["endpoint/byoc-ep-async/variant/AllTraffic"]
    )
    assert targets["ScalableTargets"][0]["MinCapacity"] == 0 and "scales to zero instances" in out
    # AWS's set-up for an asynchronous endpoint: track the backlog per instance; out of zero, a step policy on an alarm
    policies = {
        p["PolicyName"]: p
        for p in scaling_client().describe_scaling_policies(
            ServiceNamespace="sagemaker", ResourceId="endpoint/byoc-ep-async/variant/AllTraffic"
        )["ScalingPolicies"]
    }
    tracking = policies["byoc-ep-async-backlog"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 5.0 and tracking["CustomizedMetricSpecification"] == {
        "MetricName": "ApproximateBacklogSizePerInstance",
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": "byoc-ep-async"}],
        "Statistic": "Average",
    }
    step = policies["byoc-ep-async-from-zero"]
    assert step["PolicyType"] == "StepScaling" and step["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
        {"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}
    ]
    alarm = boto3.client("cloudwatch", region_name=REGION).describe_alarms(
        AlarmNames=["byoc-ep-async-has-backlog-without-capacity"]
    )["MetricAlarms"][0]
    assert (alarm["MetricName"], alarm["Namespace"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "HasBacklogWithoutCapacity",
        "AWS/SageMaker",
        "GreaterThanOrEqualToThreshold",
        1.0,
    )
    assert alarm["AlarmActions"] == [step["PolicyARN"]] and alarm["Dimensions"] == [
        {"Name": "EndpointName", "Value": "byoc-ep-async"}
    ]
    assert "holding 5 queued requests per instance, and one instance when requests wait with none running" in out

    code, out, err = run_cli(
        ["deploy", "--multi-model-prefix", "s3://byoc-bucket/models", *MODEL, "--name", "byoc-ep-mme"], capsys
    )
    assert code == 0, err
    container = deployed("byoc-ep-mme")[2]["PrimaryContainer"]
    assert container["Mode"] == "MultiModel" and container["ModelDataUrl"] == "s3://byoc-bucket/models/"
    assert (
        container["Environment"] == {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6"}
        and "--target-model" in out
    )


@pytest.mark.parametrize(
    "traffic, extra, routing",
    [
        ("ALL_AT_ONCE", [], {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0}),
        (
            "CANARY",
            ["--canary-percent", "20", "--step-wait", "600"],
            {"Type": "CANARY", "WaitIntervalInSeconds": 600, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}},
        ),
        (
            "LINEAR",
            ["--canary-percent", "25", "--step-wait", "120"],
            {
                "Type": "LINEAR",
                "WaitIntervalInSeconds": 120,
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
            },
        ),
    ],
)
def test_redeploy_in_each_traffic_mode_keeps_the_instance_count(aws, capsys, traffic, extra, routing):
    name = f"byoc-ep-redeploy-{traffic.lower().replace('_', '-')}"
    base = ["deploy", "--model-data", "s3://byoc-bucket/m/model.tar.gz", *MODEL, "--name", name]
    code, _, err = run_cli([*base, "--instance-count", "3"], capsys)
    assert code == 0, err
    first_config = sm().describe_endpoint(EndpointName=name)["EndpointConfigName"]
    code, out, err = run_cli(
        [*base, "--traffic", traffic, *extra, "--termination-wait", "900", "--wait", "--poll-seconds", "0.1"], capsys
    )
    assert code == 0, err
    update = last_request(
        aws, "UpdateEndpoint"
    )  # as sent, after botocore's own validation (which refused ALL_AT_ONCE without a wait)
    assert api_model.problems("sagemaker", "UpdateEndpoint", update) == []
    assert update["DeploymentConfig"] == {
        "BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing, "TerminationWaitInSeconds": 900}
    }
    endpoint, config, _ = deployed(name)
    assert (
        endpoint["EndpointConfigName"] == update["EndpointConfigName"] != first_config
        and endpoint["EndpointStatus"] == "InService"
    )
    assert (
        config["ProductionVariants"][0]["InitialInstanceCount"] == 3
    )  # the redeploy kept the 3 instances, it did not reset to 1
    assert (
        f"blue/green update from {first_config} to {update['EndpointConfigName']} ({traffic}" in out
        and "(3 instances, as the endpoint runs now)" in out
    )


def scaling_client():
    return boto3.client("application-autoscaling", region_name=REGION)


def test_redeploy_on_another_instance_type_deregisters_and_registers_scaling_again(aws, capsys):
    base = [
        "deploy",
        "--model-data",
        "s3://byoc-bucket/m/model.tar.gz",
        *MODEL,
        "--name",
        "byoc-ep-scaled",
        "--poll-seconds",
        "0.1",
    ]
    code, _, err = run_cli(
        [
            *base,
            "--instance-type",
            "ml.c5.xlarge",
            "--min-instances",
            "2",
            "--max-instances",
            "5",
            "--target-invocations",
            "150",
        ],
        capsys,
    )
    assert code == 0, err
    new_config = sm().describe_endpoint(EndpointName="byoc-ep-scaled")["EndpointConfigName"]
    # what AWS (and the stand-in) refuses: changing the instance type of a registered variant
    sm().create_endpoint_config(
        EndpointConfigName="byoc-ep-scaled-bigger",
        ProductionVariants=[
            {
                **sm().describe_endpoint_config(EndpointConfigName=new_config)["ProductionVariants"][0],
                "InstanceType": "ml.c5.2xlarge",
            }
        ],
    )
    with pytest.raises(botocore.exceptions.ClientError, match="registered with Application Auto Scaling"):
        sm().update_endpoint(EndpointName="byoc-ep-scaled", EndpointConfigName="byoc-ep-scaled-bigger")

    code, out, err = run_cli([*base, "--instance-type", "ml.c5.2xlarge"], capsys)
    assert code == 0, err
    operations = [
        r["headers"]["x-amz-target"].split(".")[-1] for r in recorded_requests(aws) if "x-amz-target" in r["headers"]
    ]
    tail = operations[len(operations) - operations[::-1].index("DeregisterScalableTarget") - 1 :]
    assert [
        op
        for op in tail
        if op in ("DeregisterScalableTarget", "UpdateEndpoint", "RegisterScalableTarget", "PutScalingPolicy")
    ] == ["DeregisterScalableTarget", "UpdateEndpoint", "RegisterScalableTarget", "PutScalingPolicy"]
    assert (
        "auto scaling (2-5 instances (policies: byoc-ep-scaled-invocations)) deregistered" in out
        and "auto scaling registered again: 2-5" in out
    )
    _, config, _ = deployed("byoc-ep-scaled")
    assert (
        config["ProductionVariants"][0]["InstanceType"] == "ml.c5.2xlarge"
        and config["ProductionVariants"][0]["InitialInstanceCount"] == 2
    )
    target = scaling_client().describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=["endpoint/byoc-ep-scaled/variant/AllTraffic"]
    )["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in target] == [(2, 5)]
    policy = scaling_client().describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId="endpoint/byoc-ep-scaled/variant/AllTraffic"
    )["ScalingPolicies"]
    assert [p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] for p in policy] == [150]

    code, out, err = run_cli(
        [*base, "--instance-type", "ml.c5.2xlarge", "--traffic", "LINEAR", "--canary-percent", "50"], capsys
    )  # same type: scaling stays
    assert code == 0 and "deregistered" not in out, err
    assert scaling_client().describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=["endpoint/byoc-ep-scaled/variant/AllTraffic"]
    )["ScalableTargets"]


def test_a_refused_update_puts_the_scaling_back(aws, capsys):
    """Nothing is lost: when UpdateEndpoint is refused after the scaling was taken off, the scaling is put back."""
    base = [
        "deploy",
        "--model-data",
        "s3://byoc-bucket/m/model.tar.gz",
        *MODEL,
        "--name",
        "byoc-ep-refused",
        "--poll-seconds",
        "0.1",
    ]
    code, _, err = run_cli([*base, "--min-instances", "1", "--max-instances", "3"], capsys)
    assert code == 0, err
    args = cli.build_parser()[0].parse_args([*base, "--instance-type", "ml.m5.2xlarge"])
    session = aws_module.session(REGION)
    now = deploy.running(session.client("sagemaker"), "byoc-ep-refused")
    with pytest.raises(LaunchError, match=r"Could not find endpoint configuration.*byoc-ep-refused still runs"):
        deploy.update(session, args, "byoc-ep-refused", "byoc-no-such-config", now)
    assert (
        "auto scaling put back as it was: 1-3 instances (policies: byoc-ep-refused-invocations)"
        in capsys.readouterr().out
    )
    target = scaling_client().describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=["endpoint/byoc-ep-refused/variant/AllTraffic"]
    )["ScalableTargets"]
    assert [(t["MinCapacity"], t["MaxCapacity"]) for t in target] == [(1, 3)]
    assert scaling_client().describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId="endpoint/byoc-ep-refused/variant/AllTraffic"
    )["ScalingPolicies"]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "which model? pass --training-job"),
        (["--model-data", "s3://byoc-bucket/m/model.pt"], "must be the model.tar.gz"),
        (
            ["--model-data", "s3://b-1/m.tar.gz", "--serverless-memory-mb", "1500"],
            "--serverless-memory-mb must be one of 1024, 2048",
        ),
        (
            ["--multi-model-prefix", "s3://b-1/models", "--serverless-memory-mb", "2048"],
            "serverless endpoints do not support multi-model endpoints",
        ),
        (
            ["--model-data", "s3://b-1/m.tar.gz", "--serverless-memory-mb", "2048", "--data-capture", "s3://b-1/c"],
            "serverless endpoints do not support data capture",
        ),
        (
            ["--multi-model-prefix", "s3://b-1/models", "--async-output", "s3://b-1/a"],
            "asynchronous endpoints cannot be multi-model",
        ),
        (
            ["--model-data", "s3://b-1/m.tar.gz", "--min-instances", "1"],
            "needs both --min-instances and --max-instances",
        ),
        (
            ["--model-data", "s3://b-1/m.tar.gz", "--min-instances", "0", "--max-instances", "2"],
            "only asynchronous endpoints scale to zero",
        ),
        (["--model-data", "s3://b-1/m.tar.gz", "--capture-percent", "0"], "--capture-percent must be 1 to 100"),
        (["--model-data", "s3://b-1/m.tar.gz", "--instance-type", "m5.xlarge"], "is not a SageMaker instance type"),
        (["--model-data", "s3://b-1/m.tar.gz", "--env", "SERVE_RUNTIME"], "write it as NAME=VALUE"),
        (["--model-data", "/tmp/model.tar.gz"], "SageMaker reads only s3:// URIs"),
        (
            ["--model-data", "s3://b-1/m.tar.gz", "--traffic", "LINEAR", "--canary-percent", "5"],
            "--canary-percent must be 10 to 50 for --traffic LINEAR",
        ),
        (
            ["--model-data", "s3://b-1/m.tar.gz", "--traffic", "CANARY", "--canary-percent", "60"],
            "--canary-percent must be 1 to 50 for --traffic CANARY",
        ),
        (
            ["--model-data", "s3://b-1/m.tar.gz", "--termination-wait", "7200"],
            "--termination-wait must be 0 to 3600 seconds",
        ),
        (
            [
                "--model-data",
                "s3://b-1/m.tar.gz",
                "--min-instances",
                "1",
                "--max-instances",
                "2",
                "--instance-count",
                "3",
            ],
            "--instance-count 3 is outside",
        ),
        (
            ["--model-data", "s3://b-1/m.tar.gz", "--instance-type", "ml.g5.xlarge", "--image-cuda", "cuda13"],
            "--image-cuda 'cuda13'",
        ),
    ],
)
def test_deploy_refusals_before_any_aws_call(argv, message, capsys):
    with environment({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):
        code, _, err = run_cli(["deploy", *MODEL, *argv], capsys)
    assert code == 2 and message in err


def test_deploy_refuses_an_image_from_another_region_and_an_unfinished_source(aws, capsys):
    code, _, err = run_cli(
        [
            "deploy",
            "--model-data",
            "s3://b-1/m.tar.gz",
            "--image",
            SERVE_IMAGE.replace(REGION, "eu-west-1"),
            "--role",
            ROLE,
            "--region",
            REGION,
        ],
        capsys,
    )
    assert code == 2 and "push the image to us-east-1" in err
    code, _, err = run_cli(["deploy", "--training-job", "never-ran", *MODEL], capsys)
    assert code == 2 and "AWS refused DescribeTrainingJob" in err


ANSWER = json.dumps(
    {"predictions": [{"top_k": [{"label": "Bag", "probability": 0.75}, {"label": "Coat", "probability": 0.2}]}]}
)


def test_invoke_sends_each_image_with_its_content_type_and_target_model(aws, fashion, capsys):
    images = sorted((fashion / "test" / "Bag").glob("*.png"))
    queue_answers(aws, "endpoint-results", [{"Body": ANSWER, "ContentType": "application/json"}] * len(images))
    code, out, err = run_cli(
        [
            "invoke",
            "byoc-ep-mme",
            str(fashion / "test" / "Bag"),
            "--target-model",
            "bags/model.tar.gz",
            "--top-k",
            "2",
            "--region",
            REGION,
        ],
        capsys,
    )
    sent = recorded_requests(aws, "/endpoints/byoc-ep-mme/invocations")
    assert len(sent) == len(images), [len(r["body"]) for r in sent]
    assert sorted(r["body"] for r in sent) == sorted(
        p.read_bytes() for p in images
    )  # each image once, its bytes as they are
    for one in sent:
        assert one["headers"]["content-type"] == "image/png" and one["headers"]["accept"] == "application/json"
        assert (
            one["headers"]["x-amzn-sagemaker-target-model"] == "bags/model.tar.gz"
            and one["headers"]["x-amzn-sagemaker-custom-attributes"] == "top_k=2"
        )
    assert code == 0, err
    assert sorted(out.strip().splitlines()) == [f"{p}: Bag (0.750), Coat (0.200)" for p in images]


def test_invoke_an_asynchronous_endpoint_inline_and_through_s3(aws, capsys, tmp_path):
    """InvokeEndpointAsync: up to 128,000 bytes inline, larger inputs uploaded beside the results; the answer (or the
    failure) read back from S3. moto writes the answers we queue for it where its response points."""
    import numpy as np
    from PIL import Image

    small, large, broken = tmp_path / "a-small.png", tmp_path / "b-large.png", tmp_path / "c-broken.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(small)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(large)
    broken.write_bytes(
        b"not an image " * 10_000
    )  # through S3 too: moto keys its async answers by input location, one for all inline bodies
    assert small.stat().st_size <= invoke.ASYNC_INLINE_BYTES < large.stat().st_size
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="byoc-bucket")
    queue_answers(
        aws,
        "async-endpoint-results",
        [{"data": ANSWER}, {"data": ANSWER}, {"is_failure": True, "data": '{"error": "cannot decode image"}'}],
    )

    code, out, err = run_cli(
        [
            "invoke",
            "byoc-ep-async",
            str(small),
            str(large),
            str(broken),
            "--workers",
            "1",
            "--top-k",
            "2",
            "--region",
            REGION,
            "--poll-seconds",
            "0.1",
            "--wait-seconds",
            "30",
        ],
        capsys,
    )
    assert code == 2 and "1 of 3 images failed" in err
    lines = out.strip().splitlines()
    assert (
        lines[0]
        == "byoc-ep-async is asynchronous: each image is queued with InvokeEndpointAsync and its answer read from S3"
    )
    assert lines[1:3] == [f"{small}: Bag (0.750), Coat (0.200)", f"{large}: Bag (0.750), Coat (0.200)"]
    assert lines[3].startswith(f"{broken}: error: the endpoint could not answer") and "cannot decode image" in lines[3]
    sent = recorded_requests(aws, "/endpoints/byoc-ep-async/async-invocations")
    assert len(sent) == 3 and all(r["headers"]["x-amzn-sagemaker-invocationtimeoutseconds"] == "900" for r in sent)
    assert (
        sent[0]["body"] == small.read_bytes() and "x-amzn-sagemaker-inputlocation" not in sent[0]["headers"]
    )  # inline
    location = sent[1]["headers"]["x-amzn-sagemaker-inputlocation"]
    assert (
        location.startswith("s3://byoc-bucket/async/inputs/")
        and location.endswith("-b-large.png")
        and not sent[1]["body"]
    )
    uploaded = (
        boto3.client("s3", region_name=REGION)
        .get_object(Bucket="byoc-bucket", Key=location.removeprefix("s3://byoc-bucket/"))["Body"]
        .read()
    )
    assert uploaded == large.read_bytes()
    code, _, err = run_cli(
        ["invoke", "byoc-ep-async", str(small), "--target-model", "m.tar.gz", "--region", REGION], capsys
    )
    assert code == 2 and "asynchronous endpoints serve one model" in err


def test_invoke_reports_answers_that_are_not_ours_and_missing_files(fashion, capsys):
    with pytest.raises(LaunchError, match="is not byoc-vision's JSON"):
        invoke.describe(b"body", 3)
    assert invoke.describe(b'{"predictions": [{"top_k": [{"label": "Bag", "probability": 0.5}]}]}', 3) == "Bag (0.500)"
    image = sorted((fashion / "test" / "Bag").glob("*.png"))[0]
    code, _, err = run_cli(
        ["invoke", "byoc-ep-capture", str(image.with_name("missing.png")), "--region", REGION], capsys
    )
    assert code == 2 and "does not exist" in err


@pytest.mark.container
def test_invoke_a_serving_container_on_this_machine(serve_image, trained_run, fashion, capsys):
    from test_container import wait_for_ping
    from test_serve_container import start_server

    name, port = start_server(serve_image, trained_run[0] / "model")
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        code, out, err = run_cli(
            ["invoke", f"http://127.0.0.1:{port}", str(fashion / "test" / "Sneaker"), "--top-k", "2"], capsys
        )
        assert code == 0, err
        lines = out.strip().splitlines()
        assert len(lines) == len(list((fashion / "test" / "Sneaker").glob("*.png")))
        assert sum(line.split(": ", 1)[1].startswith("Sneaker") for line in lines) >= len(lines) // 2
        assert all(line.count("(") == 2 for line in lines)
        code, out, err = run_cli(
            ["invoke", f"http://127.0.0.1:{port}", str(trained_run[0] / "model" / "model.json")], capsys
        )
        assert code == 2 and "error: 400: " in out and "cannot decode image" in out
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_transform_images_and_json_lines(aws, capsys):
    code, out, err = run_cli(
        [
            "transform",
            "--training-job",
            "byoc-deploy-src",
            *MODEL,
            "--name",
            "byoc-tf-images",
            "--input",
            "s3://byoc-bucket/batch/images",
            "--output",
            "s3://byoc-bucket/batch/out",
            "--instance-type",
            "ml.g4dn.xlarge",
            "--image-cuda",
            "12.6",
            "--concurrency",
            "4",
            "--wait",
            "--poll-seconds",
            "0.1",
        ],
        capsys,
    )
    assert code == 0, err
    assert "byoc-tf-images: Completed" in out
    job = sm().describe_transform_job(TransformJobName="byoc-tf-images")
    assert (
        job["ModelName"] == "byoc-tf-images"
        and job["BatchStrategy"] == "SingleRecord"
        and job["MaxPayloadInMB"] == 6
        and job["MaxConcurrentTransforms"] == 4
    )
    assert (
        job["TransformInput"]["ContentType"] == "application/x-image" and job["TransformInput"]["SplitType"] == "None"
    )
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://byoc-bucket/batch/images/"
    assert (
        job["TransformOutput"]["Accept"] == "application/json"
        and job["TransformOutput"]["S3OutputPath"] == "s3://byoc-bucket/batch/out"
    )
    assert last_request(aws, "CreateTransformJob")["TransformResources"] == {
        "InstanceType": "ml.g4dn.xlarge",
        "InstanceCount": 1,
        "TransformAmiVersion": "al2-ami-sagemaker-batch-gpu-535",
    }
    assert sm().describe_model(ModelName="byoc-tf-images")["PrimaryContainer"]["Image"] == SERVE_IMAGE

    code, _, err = run_cli(
        [
            "transform",
            "--model-data",
            "s3://byoc-bucket/m/model.tar.gz",
            *MODEL,
            "--name",
            "byoc-tf-lines",
            "--input",
            "s3://byoc-bucket/batch/lines",
            "--output",
            "s3://byoc-bucket/batch/lines-out",
            "--input-format",
            "jsonlines",
            "--max-payload-mb",
            "20",
        ],
        capsys,
    )
    assert code == 0, err
    job = sm().describe_transform_job(TransformJobName="byoc-tf-lines")
    assert (
        job["BatchStrategy"],
        job["MaxPayloadInMB"],
        job["TransformInput"]["ContentType"],
        job["TransformInput"]["SplitType"],
    ) == ("MultiRecord", 20, "application/jsonlines", "Line")
    assert (job["TransformOutput"]["Accept"], job["TransformOutput"]["AssembleWith"]) == (
        "application/jsonlines",
        "Line",
    )
    code, _, err = run_cli(
        [
            "transform",
            "--model-data",
            "s3://b-1/m.tar.gz",
            *MODEL,
            "--input",
            "s3://b-1/in",
            "--output",
            "s3://b-1/out",
            "--max-payload-mb",
            "101",
        ],
        capsys,
    )
    assert code == 2 and "--max-payload-mb must be 1 to 100" in err
    code, _, err = run_cli(
        [
            "transform",
            "--model-data",
            "s3://b-1/m.tar.gz",
            *MODEL,
            "--input",
            "s3://b-1/in",
            "--output",
            "s3://b-1/out",
            "--max-payload-mb",
            "30",
            "--concurrency",
            "4",
        ],
        capsys,
    )
    assert (
        code == 2
        and "--concurrency 4 x --max-payload-mb 30 = 120 MB" in err
        and "lower --concurrency to 3 or --max-payload-mb to 25" in err
    )
    code, _, err = run_cli(
        [
            "transform",
            "--model-data",
            "s3://b-1/m.tar.gz",
            *MODEL,
            "--input",
            "s3://b-1/in",
            "--output",
            "s3://b-1/out",
            "--instance-type",
            "ml.g5.xlarge",
            "--image-cuda",
            "13.0",
        ],
        capsys,
    )
    assert code == 2 and "batch transform has no GPU host for a CUDA 13.0 image" in err
