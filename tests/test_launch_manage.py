"""`status`, `logs` and `cleanup` against moto_server: only what carries our tag, CloudWatch lines, deletion in
order."""

import io
import json
import time

import boto3
import pytest
from aws_stand_in import recorded_requests, run_cli

from sagemaker_launch import cli, registry, resources

REGION = "us-east-1"
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/byoc-vision-serve:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/byoc-sagemaker-jobs"


@pytest.fixture(scope="module")
def aws(aws):
    """conftest's moto_server, with what this module's tests start from."""
    assert (
        cli.main(
            [
                "train",
                "--name",
                "byoc-job-a",
                "--image",
                IMAGE.replace("serve", "train"),
                "--role",
                ROLE,
                "--region",
                REGION,
                "--output",
                "s3://byoc-bucket/runs",
                "--channel",
                "train=s3://byoc-bucket/data/train",
            ]
        )
        == 0
    )
    for name in (
        "byoc-ep-a",
        "byoc-ep-b",
        "byoc-ep-a-prod",
    ):  # ep-a-prod: its configs and models start with "byoc-ep-a-" too
        asynchronous = (
            ["--async-output", "s3://byoc-bucket/async", "--min-instances", "0"]
            if name == "byoc-ep-b"
            else ["--min-instances", "1"]
        )
        assert (
            cli.main(
                [
                    "deploy",
                    "--model-data",
                    "s3://byoc-bucket/m/model.tar.gz",
                    "--image",
                    IMAGE,
                    "--role",
                    ROLE,
                    "--region",
                    REGION,
                    "--name",
                    name,
                    *asynchronous,
                    "--max-instances",
                    "2",
                    "--poll-seconds",
                    "0.1",
                ]
            )
            == 0
        )
    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model(ModelName="not-ours", PrimaryContainer={"Image": IMAGE}, ExecutionRoleArn=ROLE)
    ecr = boto3.client("ecr", region_name=REGION)
    registry.ensure_repository(ecr, "byoc-vision-serve", registry.lifecycle_policy(10, 7))
    ecr.create_repository(repositoryName="someone-else")
    yield aws


def names(out: str, kind: str) -> set[str]:
    return {line.split()[1] for line in out.splitlines() if line.split()[:1] == [kind]}


def test_status_lists_only_what_we_created(aws, capsys):
    code, out, err = run_cli(["status", "--region", REGION], capsys)
    assert code == 0, err
    assert names(out, "training-job") == {"byoc-job-a"} and names(out, "endpoint") == {
        "byoc-ep-a",
        "byoc-ep-b",
        "byoc-ep-a-prod",
    }
    assert (
        len(names(out, "model")) == 3
        and "not-ours" not in out
        and all(n.startswith(("byoc-ep-a-", "byoc-ep-b-")) for n in names(out, "endpoint-config"))
    )
    assert "3 endpoint(s) are billed every hour until deleted" in out
    code, out, _ = run_cli(["status", "--region", REGION, "--running"], capsys)
    assert (
        code == 0
        and names(out, "endpoint") == {"byoc-ep-a", "byoc-ep-b", "byoc-ep-a-prod"}
        and not names(out, "training-job")
    )  # moto's jobs end at once


def test_logs_of_a_training_job_and_an_endpoint(aws, capsys):
    logs = boto3.client("logs", region_name=REGION)
    now = int(time.time() * 1000)
    for group, stream, message in (
        ("/aws/sagemaker/TrainingJobs", "byoc-job-a/algo-1-1700000000", "epoch 1/2 train_loss=0.61"),
        ("/aws/sagemaker/Endpoints/byoc-ep-a", "AllTraffic/i-0abc", "model loaded, warm-up done"),
    ):
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(
            logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": now, "message": message}]
        )
    code, out, err = run_cli(["logs", "--training-job", "byoc-job-a", "--region", REGION], capsys)
    assert code == 0, err
    assert "[algo-1-1700000000] epoch 1/2 train_loss=0.61" in out
    code, out, _ = run_cli(["logs", "--endpoint", "byoc-ep-a", "--region", REGION], capsys)
    assert code == 0 and "[i-0abc] model loaded, warm-up done" in out
    code, out, _ = run_cli(["logs", "--transform-job", "never-ran", "--region", REGION], capsys)
    assert code == 0 and "no log lines yet for transform-job never-ran" in out
    with pytest.raises(SystemExit) as exited:
        cli.main(["logs", "--region", REGION])
    assert (
        exited.value.code == 2
        and "one of the arguments --training-job --transform-job --endpoint is required" in capsys.readouterr().err
    )


def test_stopping_a_running_job_where_stop_is_not_offered(aws):
    sm, scaling = (
        boto3.client("sagemaker", region_name=REGION),
        boto3.client("application-autoscaling", region_name=REGION),
    )
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    outcome = resources.take_down(
        sm, scaling, cloudwatch, resources.Resource("training-job", "byoc-job-a", "InProgress")
    )  # moto's jobs never run, so we say it does
    assert outcome.startswith("NOT stopped: this AWS endpoint does not offer stop_training_job")
    assert json.loads(recorded_requests(aws, target="StopTrainingJob")[-1]["body"]) == {"TrainingJobName": "byoc-job-a"}
    assert (
        resources.take_down(sm, scaling, cloudwatch, resources.Resource("training-job", "byoc-job-a", "Completed"))
        == "ended already"
    )


def running_models(sm, endpoint: str) -> set[str]:
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName=endpoint)["EndpointConfigName"]
    )
    return {v["ModelName"] for v in config["ProductionVariants"]}


def test_cleanup_asks_then_deletes_one_endpoint_with_its_config_model_and_scaling(aws, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no prompt possible
    code, out, err = run_cli(["cleanup", "--endpoint", "byoc-ep-a", "--region", REGION], capsys)
    assert code == 2 and "3 resources would be deleted or stopped; pass --yes" in err
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.describe_endpoint(EndpointName="byoc-ep-a")["EndpointStatus"] == "InService"  # nothing lost

    config = sm.describe_endpoint(EndpointName="byoc-ep-a")["EndpointConfigName"]
    code, out, err = run_cli(["cleanup", "--endpoint", "byoc-ep-a", "--region", REGION, "--yes"], capsys)
    assert code == 0, err
    assert (
        out.index("endpoint byoc-ep-a: deleted")
        < out.index(f"endpoint-config {config}: deleted")
        < out.index(f"model {config}: deleted")
    )
    assert sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]) == [
        "byoc-ep-a-prod",
        "byoc-ep-b",
    ]  # exact name only
    assert {m["ModelName"] for m in sm.list_models()["Models"]} == {"not-ours"} | running_models(
        sm, "byoc-ep-b"
    ) | running_models(sm, "byoc-ep-a-prod")
    assert len(sm.list_endpoint_configs()["EndpointConfigs"]) == 2
    targets = boto3.client("application-autoscaling", region_name=REGION).describe_scalable_targets(
        ServiceNamespace="sagemaker"
    )["ScalableTargets"]
    assert sorted(t["ResourceId"] for t in targets) == [
        "endpoint/byoc-ep-a-prod/variant/AllTraffic",
        "endpoint/byoc-ep-b/variant/AllTraffic",
    ]
    code, _, err = run_cli(["cleanup", "--endpoint", "byoc-ep-a", "--region", REGION, "--yes"], capsys)
    assert code == 2 and "no endpoint named exactly byoc-ep-a created by byoc-vision" in err


def test_cleanup_everything_with_ecr(aws, capsys):
    cloudwatch = boto3.client("cloudwatch", region_name=REGION)
    assert [a["AlarmName"] for a in cloudwatch.describe_alarms()["MetricAlarms"]] == [
        "byoc-ep-b-has-backlog-without-capacity"
    ]  # the async endpoint's
    code, out, err = run_cli(["cleanup", "--region", REGION, "--ecr", "--yes"], capsys)
    assert code == 0, err
    assert "ecr-repository byoc-vision-serve: deleted with its images" in out and "endpoint byoc-ep-b: deleted" in out
    sm = boto3.client("sagemaker", region_name=REGION)
    assert not sm.list_endpoints()["Endpoints"] and not sm.list_endpoint_configs()["EndpointConfigs"]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["not-ours"]
    assert [
        r["repositoryName"] for r in boto3.client("ecr", region_name=REGION).describe_repositories()["repositories"]
    ] == ["someone-else"]
    assert not cloudwatch.describe_alarms()["MetricAlarms"]  # the alarm went with the endpoint's scaling
    code, out, _ = run_cli(["status", "--region", REGION, "--running"], capsys)
    assert code == 0 and "nothing created by byoc-vision is running in us-east-1" in out
