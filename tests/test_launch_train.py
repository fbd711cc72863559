"""`python -m sagemaker_launch train` against moto_server: the request read back, and every refusal before AWS."""
import re
import textwrap
import time

import boto3
import pytest

from aws_stand_in import run_cli
from sagemaker_launch import aws as aws_calls
from sagemaker_launch import cli, training
from sagemaker_launch.errors import LaunchError

REGION = "us-east-1"
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/byoc-vision-train:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/byoc-sagemaker"
BASE = ["--region", REGION, "--image", IMAGE, "--role", ROLE, "--output", "s3://byoc-bucket/runs", "--channel", "train=s3://byoc-bucket/data/train"]


def test_train_request_read_back(aws, capsys, trained_run):
    argv = ["train", *BASE, "--name", "fields", "--channel", "valid=s3://byoc-bucket/data/valid", "--input-mode", "FastFile",
            "-p", "model=resnet50", "-p", "epochs=3", "--instance-type", "ml.g5.2xlarge", "--instance-count", "2", "--volume-gb", "80",
            "--max-runtime", "3600", "--spot", "--distributed", "--save-interval", "50", "--tag", "team=vision"]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "training job fields" in out and "arn:aws:sagemaker:us-east-1:123456789012:training-job/fields" in out and "managed spot" in out

    sm = boto3.client("sagemaker", region_name=REGION)
    job = sm.describe_training_job(TrainingJobName="fields")
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE and job["RoleArn"] == ROLE
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "FastFile"
    assert [(c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"], c["InputMode"]) for c in job["InputDataConfig"]] == [
        ("train", "s3://byoc-bucket/data/train/", "FastFile"), ("valid", "s3://byoc-bucket/data/valid/", "FastFile")]  # fmt: skip
    assert job["HyperParameters"] == {"model": "resnet50", "epochs": "3", "sagemaker_torch_distributed_enabled": "true"}
    assert job["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 80}
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["CheckpointConfig"] == {"S3Uri": "s3://byoc-bucket/runs/checkpoints/fields", "LocalPath": "/opt/ml/checkpoints"}
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://byoc-bucket/runs/models"
    assert job["TensorBoardOutputConfig"] == {"S3OutputPath": "s3://byoc-bucket/runs/tensorboard", "LocalPath": "/opt/ml/output/tensorboard"}

    hook = job["DebugHookConfig"]
    assert hook["S3OutputPath"] == "s3://byoc-bucket/runs/debugger" and hook["HookParameters"] == {"save_interval": "50"}
    assert {c["CollectionName"] for c in hook["CollectionConfigurations"]} == {"losses", "gradients", "weights", "biases"}
    rules = {r["RuleConfigurationName"]: r for r in job["DebugRuleConfigurations"]}
    assert set(rules) == {"LossNotDecreasing", "VanishingGradient", "Overfit", "Overtraining", "PoorWeightInitialization"}
    assert {r["RuleEvaluatorImage"] for r in rules.values()} == {"503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"}
    assert all(r["RuleParameters"]["rule_to_invoke"] == name for name, r in rules.items())

    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags == {"created-by": "byoc-vision", "byoc-vision:kind": "training-job", "team": "vision"}

    # moto answers with made-up MetricDefinitions, so the request as sent is checked: its regexes find the numbers
    # in the lines the real trainer printed.
    definitions = training.training_request(cli.build_parser()[0].parse_args(argv), REGION)["AlgorithmSpecification"]["MetricDefinitions"]
    lines = trained_run[1].stdout.splitlines()
    for definition in definitions:
        printed = [l for l in lines if re.search(rf"(^|\s){definition['Name']}=", l)]
        assert printed or definition["Name"] not in ("train_loss", "valid_acc", "test_acc", "images_per_sec"), definition
        for line in printed:
            expected = float(re.search(rf"(?:^|\s){definition['Name']}=(\S+)", line).group(1))
            assert float(re.search(definition["Regex"], line).group(1)) == expected, (definition, line)


def test_profiler_request_fields(aws):
    """moto does not keep ProfilerConfig: the request itself, as sent, is checked."""
    args = cli.build_parser()[0].parse_args(["train", *BASE, "--name", "prof", "--region", "eu-west-1", "--image", IMAGE.replace(REGION, "eu-west-1")])
    request = training.training_request(args, "eu-west-1")
    assert request["ProfilerConfig"] == {"S3OutputPath": "s3://byoc-bucket/runs/profiler", "ProfilingIntervalInMilliseconds": 500}
    assert [(r["RuleConfigurationName"], r["RuleEvaluatorImage"]) for r in request["ProfilerRuleConfigurations"]] == [
        ("ProfilerReport", "929884845733.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-debugger-rules:latest"),
        ("LowGPUUtilization", "929884845733.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-debugger-rules:latest")]  # fmt: skip
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400} and request["EnableManagedSpotTraining"] is False


def test_yaml_config_with_flags_winning(aws, capsys, tmp_path):
    config = tmp_path / "job.yaml"
    config.write_text(
        textwrap.dedent(
            f"""
            region: {REGION}
            image: {IMAGE}
            role: {ROLE}
            output: s3://byoc-bucket/yaml
            channel: {{train: s3://byoc-bucket/data/train, test: s3://byoc-bucket/data/test}}
            hyperparameter: {{epochs: 7, lr: 0.001}}
            instance-type: ml.m5.xlarge
            rules: [loss_not_decreasing]
            profiler-rules: none
            """
        )
    )
    code, _, err = run_cli(["train", "--config", str(config), "--name", "from-yaml", "--instance-type", "ml.c5.2xlarge"], capsys)
    assert code == 0, err
    job = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName="from-yaml")
    assert job["ResourceConfig"]["InstanceType"] == "ml.c5.2xlarge" and job["HyperParameters"] == {"epochs": "7", "lr": "0.001"}
    assert [c["ChannelName"] for c in job["InputDataConfig"]] == ["train", "test"]
    assert [r["RuleConfigurationName"] for r in job["DebugRuleConfigurations"]] == ["LossNotDecreasing"]


BAD = [
    (["--instance-type", "p3.2xlarge"], "not a SageMaker instance type"),
    (["--role", ""], "no execution role"),
    (["--role", "byoc-sagemaker"], "not an IAM role ARN"),
    (["--image", IMAGE.replace(REGION, "eu-west-1")], "is in eu-west-1, the job runs in us-east-1"),
    (["--image", "byoc-vision-train:latest"], "not an ECR image URI"),
    (["--channel", "valid=/nonexistent/valid"], "does not exist, and SageMaker reads only s3:// URIs"),
    (["--channel", "valid=tests"], "is a local path; upload it first"),
    (["--channel", "valid"], "write it as NAME=VALUE"),
    (["--input-mode", "Pipe"], "use FastFile"),
    (["--rules", "dead_relu"], "unknown --rules dead_relu"),
    (["--spot", "--max-runtime", "100", "--max-wait", "50"], "must be at least --max-runtime"),
    (["--instance-count", "0"], "--instance-count must be at least 1"),
    (["--name", "bad_name!"], "use up to 63 letters"),
    (["--config", "/nonexistent.yaml"], "cannot read --config"),
]


@pytest.mark.parametrize("extra,message", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_arguments_fail_before_any_aws_call(extra, message, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: reaching AWS would fail differently
    monkeypatch.delenv("SAGEMAKER_ROLE", raising=False)
    code, _, err = run_cli(["train", *BASE, *extra], capsys)
    assert code == 2 and message in err, err


def test_no_train_channel_and_aws_refusals_are_explained(aws, capsys):
    base = [a for a in BASE if not a.startswith("train=") and a != "--channel"]
    code, _, err = run_cli(["train", *base, "--name", "nochannel"], capsys)
    assert code == 2 and "no train channel" in err
    with pytest.raises(LaunchError, match="AWS refused DescribeTrainingJob: .*missing"):
        aws_calls.call(boto3.client("sagemaker", region_name=REGION).describe_training_job, TrainingJobName="missing")


def test_wait_follows_the_job_logs_and_rules(aws, capsys):
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName="waited/algo-1-1700000000")
    logs.put_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamName="waited/algo-1-1700000000",
        logEvents=[{"timestamp": int(time.time() * 1000), "message": "epoch=1 train_loss=0.5000 valid_acc=0.8000"}],
    )  # fmt: skip
    code, out, err = run_cli(["train", *BASE, "--name", "waited", "--wait", "--poll-seconds", "0"], capsys)
    assert code == 0, err
    assert "waited: Completed" in out and "[algo-1-1700000000] epoch=1 train_loss=0.5000 valid_acc=0.8000" in out
    assert "model: s3://" in out
