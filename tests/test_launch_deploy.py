"""`deploy`, `invoke` and `transform` against moto_server (requests read back), and `invoke` against the real serving container."""
import json
import subprocess

import boto3
import pytest

from aws_stand_in import environment, recorded_requests, run_cli
from sagemaker_launch import cli, invoke, training
from sagemaker_launch.errors import LaunchError

REGION = "us-east-1"
SERVE_IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/byoc-vision-serve:0.1.0"
TRAIN_IMAGE = SERVE_IMAGE.replace("serve", "train")
ROLE = "arn:aws:iam::123456789012:role/byoc-sagemaker"
MODEL = ["--image", SERVE_IMAGE, "--role", ROLE, "--region", REGION]


@pytest.fixture(scope="module")
def aws(aws):
    """conftest's moto_server, with what this module's tests start from."""
    argv = ["train", "--name", "byoc-deploy-src", "--image", TRAIN_IMAGE, "--role", ROLE, "--region", REGION,
            "--output", "s3://byoc-bucket/runs", "--channel", "train=s3://byoc-bucket/data/train"]  # fmt: skip
    assert cli.main(argv) == 0
    # moto names every tuning job's best training job FakeTrainingJobName (a name our launcher would refuse): made directly
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
    argv = ["deploy", "--training-job", "byoc-deploy-src", *MODEL, "--name", "byoc-ep-capture", "--instance-type", "ml.c5.xlarge", "--instance-count", "2",
            "--env", "SERVE_RUNTIME=onnxruntime", "--data-capture", "s3://byoc-bucket/capture", "--capture-percent", "50",
            "--min-instances", "1", "--max-instances", "4", "--target-invocations", "200", "--tag", "team=vision", "--poll-seconds", "0.1"]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    endpoint, config, model = deployed("byoc-ep-capture")
    artifacts = sm().describe_training_job(TrainingJobName="byoc-deploy-src")["ModelArtifacts"]["S3ModelArtifacts"]
    assert endpoint["EndpointStatus"] == "InService" and "arn:aws:sagemaker:us-east-1:123456789012:endpoint/byoc-ep-capture" in out
    assert model["PrimaryContainer"]["Image"] == SERVE_IMAGE and model["PrimaryContainer"]["ModelDataUrl"] == artifacts
    assert model["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "6", "SERVE_RUNTIME": "onnxruntime"} and model["ExecutionRoleArn"] == ROLE
    variant = config["ProductionVariants"][0]
    assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == ("AllTraffic", "ml.c5.xlarge", 2)
    assert "InferenceAmiVersion" not in last_request(aws, "CreateEndpointConfig")["ProductionVariants"][0]
    capture = config["DataCaptureConfig"]
    assert capture["EnableCapture"] is True and capture["InitialSamplingPercentage"] == 50 and capture["DestinationS3Uri"] == "s3://byoc-bucket/capture"
    assert capture["CaptureOptions"] == [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]
    tags = {t["Key"]: t["Value"] for t in sm().list_tags(ResourceArn=endpoint["EndpointArn"])["Tags"]}
    assert tags == {"created-by": "byoc-vision", "byoc-vision:kind": "endpoint", "team": "vision"}

    scaling = boto3.client("application-autoscaling", region_name=REGION)
    target = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"][0]
    assert (target["ResourceId"], target["ScalableDimension"], target["MinCapacity"], target["MaxCapacity"]) == (
        "endpoint/byoc-ep-capture/variant/AllTraffic", "sagemaker:variant:DesiredInstanceCount", 1, 4)  # fmt: skip
    policy = scaling.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId="endpoint/byoc-ep-capture/variant/AllTraffic")["ScalingPolicies"][0]
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling" and tracking["TargetValue"] == 200
    assert tracking["PredefinedMetricSpecification"] == {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}
    assert (tracking["ScaleInCooldown"], tracking["ScaleOutCooldown"]) == (300, 60)
    assert "1-4 x ml.c5.xlarge: billed every hour while the endpoint exists" in out and "96 instance-hours a day at most" in out


def test_deploy_the_best_job_of_a_tuning_job_on_a_gpu(aws, capsys, tmp_path):
    (tmp_path / "space.yaml").write_text("lr: {type: continuous, min: 0.0001, max: 0.1, scaling: Logarithmic}\n")
    code, _, err = run_cli(["tune", "--name", "byoc-tuning-src", "--image", TRAIN_IMAGE, "--role", ROLE, "--region", REGION, "--output", "s3://byoc-bucket/runs",
                        "--channel", "train=s3://byoc-bucket/data/train", "--search-space", str(tmp_path / "space.yaml")], capsys)  # fmt: skip
    assert code == 0, err
    code, out, err = run_cli(["deploy", "--tuning-job", "byoc-tuning-src", *MODEL, "--name", "byoc-ep-gpu", "--instance-type", "ml.g4dn.xlarge"], capsys)
    assert code == 0, err
    assert "best training job of byoc-tuning-src: FakeTrainingJobName" in out
    _, config, model = deployed("byoc-ep-gpu")
    assert model["PrimaryContainer"]["ModelDataUrl"] == sm().describe_training_job(TrainingJobName="FakeTrainingJobName")["ModelArtifacts"]["S3ModelArtifacts"]
    assert last_request(aws, "CreateEndpointConfig")["ProductionVariants"][0]["InferenceAmiVersion"] == "al2-ami-sagemaker-inference-gpu-3-1"


def test_serverless_asynchronous_and_multi_model_endpoints(aws, capsys):
    code, out, err = run_cli(["deploy", "--model-data", "s3://byoc-bucket/m/model.tar.gz", *MODEL, "--name", "byoc-ep-serverless",
                          "--serverless-memory-mb", "3072", "--serverless-concurrency", "10"], capsys)  # fmt: skip
    assert code == 0, err
    variant = deployed("byoc-ep-serverless")[1]["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 3072, "MaxConcurrency": 10} and "InstanceType" not in variant
    assert deployed("byoc-ep-serverless")[2]["PrimaryContainer"]["Environment"] == {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "4"}  # serverless takes 4 MB
    assert "billed per request (duration x memory), nothing while idle" in out

    code, out, err = run_cli(["deploy", "--model-data", "s3://byoc-bucket/m/model.tar.gz", *MODEL, "--name", "byoc-ep-async", "--async-output", "s3://byoc-bucket/async",
                          "--async-concurrency", "2", "--min-instances", "0", "--max-instances", "2", "--poll-seconds", "0.1"], capsys)  # fmt: skip
    assert code == 0, err
    config = deployed("byoc-ep-async")[1]
    assert deployed("byoc-ep-async")[2]["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600", "SERVE_BODY_READ_TIMEOUT_SECONDS": "600", "SERVE_MAX_UPLOAD_BUFFER_MB": "2048",
    }  # an asynchronous request: up to 1 GB and an hour  # fmt: skip
    assert config["AsyncInferenceConfig"] == {"OutputConfig": {"S3OutputPath": "s3://byoc-bucket/async/results", "S3FailurePath": "s3://byoc-bucket/async/failures"},
                                              "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2}}  # fmt: skip
    targets = boto3.client("application-autoscaling", region_name=REGION).describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=["endpoint/byoc-ep-async/variant/AllTraffic"])
    assert targets["ScalableTargets"][0]["MinCapacity"] == 0 and "scales to zero instances" in out

    code, out, err = run_cli(["deploy", "--multi-model-prefix", "s3://byoc-bucket/models", *MODEL, "--name", "byoc-ep-mme"], capsys)
    assert code == 0, err
    container = deployed("byoc-ep-mme")[2]["PrimaryContainer"]
    assert container["Mode"] == "MultiModel" and container["ModelDataUrl"] == "s3://byoc-bucket/models/"
    assert container["Environment"] == {"SAGEMAKER_MULTI_MODEL": "true", "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6"} and "--target-model" in out


def test_blue_green_update_where_update_endpoint_is_not_offered(aws, capsys):
    base = ["deploy", "--model-data", "s3://byoc-bucket/m/model.tar.gz", *MODEL, "--name", "byoc-ep-bluegreen"]
    code, _, err = run_cli(base, capsys)
    assert code == 0, err
    first_config = sm().describe_endpoint(EndpointName="byoc-ep-bluegreen")["EndpointConfigName"]
    code, _, err = run_cli([*base, "--traffic", "CANARY", "--canary-percent", "20", "--step-wait", "600", "--termination-wait", "900"], capsys)
    assert code == 2 and "does not offer UpdateEndpoint, so byoc-ep-bluegreen still runs " + first_config in err and "`cleanup` removes them" in err
    update = last_request(aws, "UpdateEndpoint")  # the request as sent, though moto cannot carry it out
    assert update["EndpointName"] == "byoc-ep-bluegreen" and update["EndpointConfigName"] != first_config
    assert update["DeploymentConfig"] == {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": {
        "Type": "CANARY", "WaitIntervalInSeconds": 600, "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20}}, "TerminationWaitInSeconds": 900}}  # fmt: skip
    assert sm().describe_endpoint_config(EndpointConfigName=update["EndpointConfigName"])  # the new config exists, for a later retry or cleanup


@pytest.mark.parametrize("argv, message", [
    ([], "which model? pass --training-job"),
    (["--model-data", "s3://byoc-bucket/m/model.pt"], "must be the model.tar.gz"),
    (["--model-data", "s3://b-1/m.tar.gz", "--serverless-memory-mb", "1500"], "--serverless-memory-mb must be one of 1024, 2048"),
    (["--multi-model-prefix", "s3://b-1/models", "--serverless-memory-mb", "2048"], "serverless endpoints do not support multi-model endpoints"),
    (["--model-data", "s3://b-1/m.tar.gz", "--serverless-memory-mb", "2048", "--data-capture", "s3://b-1/c"], "serverless endpoints do not support data capture"),
    (["--multi-model-prefix", "s3://b-1/models", "--async-output", "s3://b-1/a"], "asynchronous endpoints cannot be multi-model"),
    (["--model-data", "s3://b-1/m.tar.gz", "--min-instances", "1"], "needs both --min-instances and --max-instances"),
    (["--model-data", "s3://b-1/m.tar.gz", "--min-instances", "0", "--max-instances", "2"], "only asynchronous endpoints scale to zero"),
    (["--model-data", "s3://b-1/m.tar.gz", "--capture-percent", "0"], "--capture-percent must be 1 to 100"),
    (["--model-data", "s3://b-1/m.tar.gz", "--instance-type", "m5.xlarge"], "is not a SageMaker instance type"),
    (["--model-data", "s3://b-1/m.tar.gz", "--env", "SERVE_RUNTIME"], "write it as NAME=VALUE"),
    (["--model-data", "/tmp/model.tar.gz"], "SageMaker reads only s3:// URIs"),
])  # fmt: skip
def test_deploy_refusals_before_any_aws_call(argv, message, capsys):
    with environment({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}):
        code, _, err = run_cli(["deploy", *MODEL, *argv], capsys)
    assert code == 2 and message in err


def test_deploy_refuses_an_image_from_another_region_and_an_unfinished_source(aws, capsys):
    code, _, err = run_cli(["deploy", "--model-data", "s3://b-1/m.tar.gz", "--image", SERVE_IMAGE.replace(REGION, "eu-west-1"), "--role", ROLE, "--region", REGION], capsys)
    assert code == 2 and "push the image to us-east-1" in err
    code, _, err = run_cli(["deploy", "--training-job", "never-ran", *MODEL], capsys)
    assert code == 2 and "AWS refused DescribeTrainingJob" in err


def test_invoke_sends_each_image_with_its_content_type_and_target_model(aws, fashion, capsys):
    images = sorted((fashion / "test" / "Bag").glob("*.png"))
    code, out, err = run_cli(["invoke", "byoc-ep-mme", str(fashion / "test" / "Bag"), "--target-model", "bags/model.tar.gz", "--top-k", "2", "--region", REGION], capsys)
    sent = recorded_requests(aws, "/endpoints/byoc-ep-mme/invocations")
    assert {r["body"] for r in sent} == {p.read_bytes() for p in images}  # each image, maybe more than once: boto3 retries HTTP 500
    for one in sent:
        assert one["headers"]["content-type"] == "image/png" and one["headers"]["accept"] == "application/json"
        assert one["headers"]["x-amzn-sagemaker-target-model"] == "bags/model.tar.gz" and one["headers"]["x-amzn-sagemaker-custom-attributes"] == "top_k=2"
    # moto's runtime cannot decode binary bodies (HTTP 500): each image gets its error line, the run exits non-zero
    assert code == 2 and f"{len(images)} of {len(images)} images failed" in err
    assert all(line.startswith(tuple(str(p) for p in images)) and "AWS refused InvokeEndpoint" in line for line in out.strip().splitlines())


def test_invoke_reports_answers_that_are_not_ours_and_missing_files(fashion, capsys):
    with pytest.raises(LaunchError, match="is not byoc-vision's JSON"):
        invoke.describe(b"body", 3)
    assert invoke.describe(b'{"predictions": [{"top_k": [{"label": "Bag", "probability": 0.5}]}]}', 3) == "Bag (0.500)"
    image = sorted((fashion / "test" / "Bag").glob("*.png"))[0]
    code, _, err = run_cli(["invoke", "byoc-ep-capture", str(image.with_name("missing.png")), "--region", REGION], capsys)
    assert code == 2 and "does not exist" in err


@pytest.mark.container
def test_invoke_a_serving_container_on_this_machine(serve_image, trained_run, fashion, capsys):
    from test_container import wait_for_ping
    from test_serve_container import start_server

    name, port = start_server(serve_image, trained_run[0] / "model")
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        code, out, err = run_cli(["invoke", f"http://127.0.0.1:{port}", str(fashion / "test" / "Sneaker"), "--top-k", "2"], capsys)
        assert code == 0, err
        lines = out.strip().splitlines()
        assert len(lines) == len(list((fashion / "test" / "Sneaker").glob("*.png")))
        assert sum(line.split(": ", 1)[1].startswith("Sneaker") for line in lines) >= len(lines) // 2
        assert all(line.count("(") == 2 for line in lines)
        code, out, err = run_cli(["invoke", f"http://127.0.0.1:{port}", str(trained_run[0] / "model" / "model.json")], capsys)
        assert code == 2 and "error: 400: " in out and "cannot decode image" in out
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_transform_images_and_json_lines(aws, capsys):
    code, out, err = run_cli(["transform", "--training-job", "byoc-deploy-src", *MODEL, "--name", "byoc-tf-images", "--input", "s3://byoc-bucket/batch/images",
                          "--output", "s3://byoc-bucket/batch/out", "--instance-type", "ml.g4dn.xlarge", "--concurrency", "4", "--wait", "--poll-seconds", "0.1"], capsys)  # fmt: skip
    assert code == 0, err
    assert "byoc-tf-images: Completed" in out
    job = sm().describe_transform_job(TransformJobName="byoc-tf-images")
    assert job["ModelName"] == "byoc-tf-images" and job["BatchStrategy"] == "SingleRecord" and job["MaxPayloadInMB"] == 6 and job["MaxConcurrentTransforms"] == 4
    assert job["TransformInput"]["ContentType"] == "application/x-image" and job["TransformInput"]["SplitType"] == "None"
    assert job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == "s3://byoc-bucket/batch/images/"
    assert job["TransformOutput"]["Accept"] == "application/json" and job["TransformOutput"]["S3OutputPath"] == "s3://byoc-bucket/batch/out"
    assert last_request(aws, "CreateTransformJob")["TransformResources"] == {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 1, "TransformAmiVersion": "al2-ami-sagemaker-batch-gpu-535"}
    assert sm().describe_model(ModelName="byoc-tf-images")["PrimaryContainer"]["Image"] == SERVE_IMAGE

    code, _, err = run_cli(["transform", "--model-data", "s3://byoc-bucket/m/model.tar.gz", *MODEL, "--name", "byoc-tf-lines", "--input", "s3://byoc-bucket/batch/lines",
                        "--output", "s3://byoc-bucket/batch/lines-out", "--input-format", "jsonlines", "--max-payload-mb", "20"], capsys)  # fmt: skip
    assert code == 0, err
    job = sm().describe_transform_job(TransformJobName="byoc-tf-lines")
    assert (job["BatchStrategy"], job["MaxPayloadInMB"], job["TransformInput"]["ContentType"], job["TransformInput"]["SplitType"]) == ("MultiRecord", 20, "application/jsonlines", "Line")
    assert (job["TransformOutput"]["Accept"], job["TransformOutput"]["AssembleWith"]) == ("application/jsonlines", "Line")
    code, _, err = run_cli(["transform", "--model-data", "s3://b-1/m.tar.gz", *MODEL, "--input", "s3://b-1/in", "--output", "s3://b-1/out", "--max-payload-mb", "101"], capsys)
    assert code == 2 and "--max-payload-mb must be 1 to 100" in err
