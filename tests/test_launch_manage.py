"""`status`, `logs` and `cleanup` against moto_server: only what carries our tag, CloudWatch lines, deletion in order."""
import io
import json
import time

import boto3
import pytest

from aws_stand_in import recorded_requests, run_cli
from sagemaker_launch import cli, registry, resources

REGION = "us-east-1"
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/byoc-vision-serve:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/byoc-sagemaker"


@pytest.fixture(scope="module")
def aws(aws):
    """conftest's moto_server, with what this module's tests start from."""
    assert cli.main(["train", "--name", "job-a", "--image", IMAGE.replace("serve", "train"), "--role", ROLE, "--region", REGION,
                     "--output", "s3://byoc-bucket/runs", "--channel", "train=s3://byoc-bucket/data/train"]) == 0  # fmt: skip
    for name in ("ep-a", "ep-b"):
        assert cli.main(["deploy", "--model-data", "s3://byoc-bucket/m/model.tar.gz", "--image", IMAGE, "--role", ROLE, "--region", REGION,
                         "--name", name, "--min-instances", "1", "--max-instances", "2", "--poll-seconds", "0.1"]) == 0  # fmt: skip
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
    assert names(out, "training-job") == {"job-a"} and names(out, "endpoint") == {"ep-a", "ep-b"}
    assert len(names(out, "model")) == 2 and "not-ours" not in out and all(n.startswith(("ep-a-", "ep-b-")) for n in names(out, "endpoint-config"))
    assert "2 endpoint(s) are billed every hour until deleted" in out
    code, out, _ = run_cli(["status", "--region", REGION, "--running"], capsys)
    assert code == 0 and names(out, "endpoint") == {"ep-a", "ep-b"} and not names(out, "training-job")  # moto's jobs end at once


def test_logs_of_a_training_job_and_an_endpoint(aws, capsys):
    logs = boto3.client("logs", region_name=REGION)
    now = int(time.time() * 1000)
    for group, stream, message in (("/aws/sagemaker/TrainingJobs", "job-a/algo-1-1700000000", "epoch 1/2 train_loss=0.61"),
                                   ("/aws/sagemaker/Endpoints/ep-a", "AllTraffic/i-0abc", "model loaded, warm-up done")):  # fmt: skip
        logs.create_log_group(logGroupName=group)
        logs.create_log_stream(logGroupName=group, logStreamName=stream)
        logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": now, "message": message}])
    code, out, err = run_cli(["logs", "--training-job", "job-a", "--region", REGION], capsys)
    assert code == 0, err
    assert "[algo-1-1700000000] epoch 1/2 train_loss=0.61" in out
    code, out, _ = run_cli(["logs", "--endpoint", "ep-a", "--region", REGION], capsys)
    assert code == 0 and "[i-0abc] model loaded, warm-up done" in out
    code, out, _ = run_cli(["logs", "--transform-job", "never-ran", "--region", REGION], capsys)
    assert code == 0 and "no log lines yet for transform-job never-ran" in out
    with pytest.raises(SystemExit) as exited:
        cli.main(["logs", "--region", REGION])
    assert exited.value.code == 2 and "one of the arguments --training-job --transform-job --endpoint is required" in capsys.readouterr().err


def test_stopping_a_running_job_where_stop_is_not_offered(aws):
    sm, scaling = boto3.client("sagemaker", region_name=REGION), boto3.client("application-autoscaling", region_name=REGION)
    outcome = resources.take_down(sm, scaling, resources.Resource("training-job", "job-a", "InProgress"))  # moto's jobs never run, so we say it does
    assert outcome.startswith("NOT stopped: this AWS endpoint does not offer stop_training_job")
    assert json.loads(recorded_requests(aws, target="StopTrainingJob")[-1]["body"]) == {"TrainingJobName": "job-a"}
    assert resources.take_down(sm, scaling, resources.Resource("training-job", "job-a", "Completed")) == "ended already"


def test_cleanup_asks_then_deletes_one_endpoint_with_its_config_model_and_scaling(aws, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no prompt possible
    code, out, err = run_cli(["cleanup", "--endpoint", "ep-a", "--region", REGION], capsys)
    assert code == 2 and "3 resources would be deleted or stopped; pass --yes" in err
    sm = boto3.client("sagemaker", region_name=REGION)
    assert sm.describe_endpoint(EndpointName="ep-a")["EndpointStatus"] == "InService"  # nothing lost

    config = sm.describe_endpoint(EndpointName="ep-a")["EndpointConfigName"]
    code, out, err = run_cli(["cleanup", "--endpoint", "ep-a", "--region", REGION, "--yes"], capsys)
    assert code == 0, err
    assert out.index("endpoint ep-a: deleted") < out.index(f"endpoint-config {config}: deleted") < out.index(f"model {config}: deleted")
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["ep-b"]
    assert {m["ModelName"] for m in sm.list_models()["Models"]} == {"not-ours", sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="ep-b")["EndpointConfigName"])["ProductionVariants"][0]["ModelName"]}  # fmt: skip
    targets = boto3.client("application-autoscaling", region_name=REGION).describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [t["ResourceId"] for t in targets] == ["endpoint/ep-b/variant/AllTraffic"]
    code, _, err = run_cli(["cleanup", "--endpoint", "ep-a", "--region", REGION, "--yes"], capsys)
    assert code == 2 and "no endpoint ep-a created by byoc-vision" in err


def test_cleanup_everything_with_ecr(aws, capsys):
    code, out, err = run_cli(["cleanup", "--region", REGION, "--ecr", "--yes"], capsys)
    assert code == 0, err
    assert "ecr-repository byoc-vision-serve: deleted with its images" in out and "endpoint ep-b: deleted" in out
    sm = boto3.client("sagemaker", region_name=REGION)
    assert not sm.list_endpoints()["Endpoints"] and not sm.list_endpoint_configs()["EndpointConfigs"]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["not-ours"]
    assert [r["repositoryName"] for r in boto3.client("ecr", region_name=REGION).describe_repositories()["repositories"]] == ["someone-else"]
    code, out, _ = run_cli(["status", "--region", REGION, "--running"], capsys)
    assert code == 0 and "nothing created by byoc-vision is running in us-east-1" in out
