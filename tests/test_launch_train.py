"""`python -m sagemaker_launch train` against moto_server: the request read back, and every refusal before AWS."""

import io
import json
import posixpath
import re
import tarfile
import textwrap
import time

import boto3
import pytest
import smdebug_rulesconfig
from aws_stand_in import recorded_requests, run_cli

from byoc_contract.rules import (
    DEFAULT_RULES,
    PROFILER_RULES,
    RULE_NAMES,
    TENSOR_RULES,
    as_rule_parameter,
    collections_for,
)
from sagemaker_launch import aws as aws_calls
from sagemaker_launch import cli, training
from sagemaker_launch.api_model import problems
from sagemaker_launch.errors import LaunchError

REGION = "us-east-1"
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/byoc-vision-train:0.1.0"
ROLE = "arn:aws:iam::123456789012:role/byoc-sagemaker-jobs"
BASE = [
    "--region",
    REGION,
    "--image",
    IMAGE,
    "--role",
    ROLE,
    "--output",
    "s3://byoc-bucket/runs",
    "--channel",
    "train=s3://byoc-bucket/data/train",
]


def test_train_request_read_back(aws, capsys, trained_run):
    argv = [
        "train",
        *BASE,
        "--name",
        "byoc-fields",
        "--channel",
        "valid=s3://byoc-bucket/data/valid",
        "--input-mode",
        "FastFile",
        "-p",
        "model=resnet50",
        "-p",
        "epochs=3",
        "--instance-type",
        "ml.g5.2xlarge",
        "--instance-count",
        "2",
        "--volume-gb",
        "80",
        "--max-runtime",
        "3600",
        "--spot",
        "--distributed",
        "--save-interval",
        "50",
        "--tag",
        "team=vision",
    ]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert (
        "training job byoc-fields" in out
        and "arn:aws:sagemaker:us-east-1:123456789012:training-job/byoc-fields" in out
        and "managed spot" in out
    )

    sm = boto3.client("sagemaker", region_name=REGION)
    job = sm.describe_training_job(TrainingJobName="byoc-fields")
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE and job["RoleArn"] == ROLE
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "FastFile"
    assert [
        (c["ChannelName"], c["DataSource"]["S3DataSource"]["S3Uri"], c["InputMode"]) for c in job["InputDataConfig"]
    ] == [("train", "s3://byoc-bucket/data/train/", "FastFile"), ("valid", "s3://byoc-bucket/data/valid/", "FastFile")]
    assert job["ResourceConfig"] == {"InstanceType": "ml.g5.2xlarge", "InstanceCount": 2, "VolumeSizeInGB": 80}
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert job["CheckpointConfig"] == {
        "S3Uri": "s3://byoc-bucket/runs/checkpoints/byoc-fields",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://byoc-bucket/runs/models"
    assert job["TensorBoardOutputConfig"] == {
        "S3OutputPath": "s3://byoc-bucket/runs/tensorboard",
        "LocalPath": "/opt/ml/output/tensorboard",
    }

    # Debugger is closed to new accounts: the job judges the course rules itself, AWS gets no Debugger configuration
    assert job["HyperParameters"] == {
        "model": "resnet50",
        "epochs": "3",
        "sagemaker_torch_distributed_enabled": "true",
        "debugger-interval": "50",
        "debugger-rules": ",".join(DEFAULT_RULES),
    }
    sent = json.loads(recorded_requests(aws, target="CreateTrainingJob")[-1]["body"])
    assert sent["TrainingJobName"] == "byoc-fields"
    assert not {"DebugHookConfig", "DebugRuleConfigurations", "ProfilerRuleConfigurations"} & set(sent)
    assert sent["ProfilerConfig"] == {"DisableProfiler": True}

    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=job["TrainingJobArn"])["Tags"]}
    assert tags == {"created-by": "byoc-vision", "byoc-vision:kind": "training-job", "team": "vision"}

    # moto answers with made-up MetricDefinitions, so the request as sent is checked: its regexes find the numbers
    # in the lines the real trainer printed.
    definitions = training.training_request(cli.build_parser()[0].parse_args(argv), REGION)["AlgorithmSpecification"][
        "MetricDefinitions"
    ]
    lines = trained_run[1].stdout.splitlines()
    for definition in definitions:
        printed = [line for line in lines if re.search(rf"(^|\s){definition['Name']}=", line)]
        assert printed or definition["Name"] not in ("train_loss", "valid_acc", "test_acc", "images_per_sec"), (
            definition
        )
        for line in printed:
            expected = float(re.search(rf"(?:^|\s){definition['Name']}=(\S+)", line).group(1))
            assert float(re.search(definition["Regex"], line).group(1)) == expected, (definition, line)


def test_sagemaker_debugger_restores_the_aws_side_configuration(aws, capsys):
    """--sagemaker-debugger (accounts that still have Debugger): hook, rule jobs with the StopTraining action, Profiler.
    moto keeps neither ProfilerConfig nor the rules' parameters faithfully: the request as moto received it is read
    back."""
    argv = [
        "train",
        *BASE,
        "--name",
        "byoc-aws-side",
        "--sagemaker-debugger",
        "--save-interval",
        "50",
        "--stop-on-rule",
        "VanishingGradient",
    ]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    sent = json.loads(recorded_requests(aws, target="CreateTrainingJob")[-1]["body"])
    assert sent["HyperParameters"] == {"debugger-rules": "none"}  # AWS judges the rules: the job does not do it twice
    hook = sent["DebugHookConfig"]
    assert hook["S3OutputPath"] == "s3://byoc-bucket/runs/debugger" and hook["HookParameters"] == {
        "save_interval": "50"
    }
    # --collections (default: losses) and what the rules read (byoc_contract.rules, the trainer's table too)
    assert {c["CollectionName"] for c in hook["CollectionConfigurations"]} == {
        "losses",
        "gradients",
        "relu_input",
        "labels",
        "predictions",
    }
    rules = {r["RuleConfigurationName"]: r for r in sent["DebugRuleConfigurations"]}
    assert set(rules) == set(DEFAULT_RULES)
    assert {r["RuleEvaluatorImage"] for r in rules.values()} == {
        "503895931360.dkr.ecr.us-east-1.amazonaws.com/sagemaker-debugger-rules:latest"
    }
    assert_built_from_rulesconfig(sent, stop_on={"VanishingGradient"}, job="byoc-aws-side")
    assert sent["ProfilerConfig"] == {
        "S3OutputPath": "s3://byoc-bucket/runs/profiler",
        "ProfilingIntervalInMilliseconds": 500,
    }
    assert [r["RuleConfigurationName"] for r in sent["ProfilerRuleConfigurations"]] == [
        "ProfilerReport",
        "LowGPUUtilization",
    ]


def assert_built_from_rulesconfig(request: dict, stop_on: set[str], job: str) -> None:
    """Every rule request as AWS's own ``smdebug-rulesconfig`` configures it: valid for botocore's model, the same
    rule to invoke, only parameters AWS documents for the rule (``byoc_contract.rules``), the StopTraining action as
    SDK v2 serialized it, and a hook saving every collection that AWS's configuration and the trainer's rules name."""
    assert problems("sagemaker", "CreateTrainingJob", request) == []
    hook = {
        c["CollectionName"]: c["CollectionParameters"] for c in request["DebugHookConfig"]["CollectionConfigurations"]
    }
    names = [r["RuleConfigurationName"] for r in request["DebugRuleConfigurations"]]
    assert set(collections_for(names)) <= set(hook)  # what the trainer saves for these rules is what AWS's hook saves
    for rule in request["DebugRuleConfigurations"]:
        name, params = rule["RuleConfigurationName"], dict(rule["RuleParameters"])
        aws = getattr(smdebug_rulesconfig, re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower())()
        assert aws["DebugRuleConfiguration"]["RuleParameters"].items() <= params.items(), name
        action = params.pop("action_json", None)
        expected = smdebug_rulesconfig.ActionList(smdebug_rulesconfig.StopTraining(job)).serialize()
        assert action == (expected if name in stop_on else None), name
        assert set(params) - {"rule_to_invoke"} <= set(TENSOR_RULES[name].parameters), name
        for collection in aws.get("CollectionConfigurations", []):
            wanted = {k: v for k, v in collection["CollectionParameters"].items() if k != "save_interval"}
            assert wanted.items() <= hook[collection["CollectionName"]].items(), (name, collection)
    for rule in request.get("ProfilerRuleConfigurations", []):
        name = rule["RuleConfigurationName"]
        ours = dict(PROFILER_RULES[name].parameters) if name in PROFILER_RULES else {}
        aws = getattr(smdebug_rulesconfig, name)(**ours).rule_parameters
        assert rule["RuleParameters"] == {k: as_rule_parameter(v) for k, v in aws.items() if v is not None}, name


def test_every_rule_request_is_built_from_aws_rulesconfig(aws):
    """All seven rules, each stopping the job: the Overfit request once carried Overtraining's parameters and the
    PoorWeightInitialization hook lacked AWS's relu_input collection; the check above catches both."""
    argv = [
        "train",
        *BASE,
        "--name",
        "byoc-all-rules",
        "--sagemaker-debugger",
        "--rules",
        "all",
        "--stop-on-rule",
        "all",
    ]
    request = training.training_request(cli.build_parser()[0].parse_args(argv), REGION)
    assert len(request["DebugRuleConfigurations"]) == len(RULE_NAMES) == 7
    assert_built_from_rulesconfig(request, stop_on=set(RULE_NAMES), job="byoc-all-rules")
    overfit = next(r for r in request["DebugRuleConfigurations"] if r["RuleConfigurationName"] == "Overfit")
    assert "patience_train" not in overfit["RuleParameters"] and overfit["RuleParameters"]["patience"] == "1"


def test_profiler_request_fields(aws):
    """The regional rule image for the Profiler's rules (with --sagemaker-debugger)."""
    args = cli.build_parser()[0].parse_args(
        [
            "train",
            *BASE,
            "--name",
            "byoc-prof",
            "--region",
            "eu-west-1",
            "--image",
            IMAGE.replace(REGION, "eu-west-1"),
            "--sagemaker-debugger",
        ]
    )
    request = training.training_request(args, "eu-west-1")
    assert [(r["RuleConfigurationName"], r["RuleEvaluatorImage"]) for r in request["ProfilerRuleConfigurations"]] == [
        ("ProfilerReport", "929884845733.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-debugger-rules:latest"),
        ("LowGPUUtilization", "929884845733.dkr.ecr.eu-west-1.amazonaws.com/sagemaker-debugger-rules:latest"),
    ]
    assert (
        request["StoppingCondition"] == {"MaxRuntimeInSeconds": 86400} and request["EnableManagedSpotTraining"] is False
    )


def test_in_job_rule_metrics_and_stop(aws):
    """The rule lines' metric definitions match the line the trainer prints; --stop-on-rule becomes a hyperparameter."""
    from byoc_contract.rules import format_line

    args = cli.build_parser()[0].parse_args(
        ["train", *BASE, "--rules", "vanishing_gradient", "overfit", "--stop-on-rule", "VanishingGradient"]
    )
    request = training.training_request(args, REGION)
    assert request["HyperParameters"] == {
        "debugger-rules": "VanishingGradient,Overfit",
        "stop-on-rule": "VanishingGradient",
    }
    definitions = {d["Name"]: d["Regex"] for d in request["AlgorithmSpecification"]["MetricDefinitions"]}
    assert set(definitions) >= {"rule_VanishingGradient", "rule_Overfit"} and "rule_ClassImbalance" not in definitions
    line = format_line("VanishingGradient", "IssuesFound", 120, "mean |conv1.weight_grad| = 0 < 1e-07")
    assert float(re.search(definitions["rule_VanishingGradient"], line).group(1)) == 120
    assert not re.search(definitions["rule_Overfit"], line)
    assert not re.search(
        definitions["rule_VanishingGradient"],
        format_line("VanishingGradient", "NoIssuesFound", None, "checked 4 saved steps"),
    )


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
            sagemaker-debugger: true
            profiler-rules: none
            """
        )
    )
    code, _, err = run_cli(
        ["train", "--config", str(config), "--name", "byoc-from-yaml", "--instance-type", "ml.c5.2xlarge"], capsys
    )
    assert code == 0, err
    job = boto3.client("sagemaker", region_name=REGION).describe_training_job(TrainingJobName="byoc-from-yaml")
    assert job["ResourceConfig"]["InstanceType"] == "ml.c5.2xlarge" and job["HyperParameters"] == {
        "epochs": "7",
        "lr": "0.001",
        "debugger-rules": "none",
    }
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
    (["--rules", "dead_relu"], "unknown rule 'dead_relu'"),
    (
        ["--rules", "Overfit", "--stop-on-rule", "VanishingGradient"],
        "--stop-on-rule VanishingGradient: not among the evaluated rules (Overfit); add it to --rules.",
    ),
    (["--profiler-rules", "profiler_report"], "needs --sagemaker-debugger"),
    (["--spot", "--max-runtime", "100", "--max-wait", "50"], "must be at least --max-runtime"),
    (["--instance-count", "0"], "--instance-count must be at least 1"),
    (["--name", "bad_name!"], "use up to 63 letters"),
    (["--name", "demo"], "names start with byoc- (e.g. byoc-demo), because the launcher's IAM policy"),
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
    code, _, err = run_cli(["train", *base, "--name", "byoc-nochannel"], capsys)
    assert code == 2 and "no train channel" in err
    with pytest.raises(LaunchError, match=r"AWS refused DescribeTrainingJob: .*missing"):
        aws_calls.call(boto3.client("sagemaker", region_name=REGION).describe_training_job, TrainingJobName="missing")


def tar_gz(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


RULES_JSON = {
    "rules": [
        {
            "rule": "VanishingGradient",
            "status": "IssuesFound",
            "step": 0,
            "evidence": "mean |gradient/ResNet_bn1.bias| = 0 < 1e-07",
        },
        {"rule": "Overfit", "status": "NoIssuesFound", "step": None, "evidence": "checked 10 saved steps"},
    ],
    "stop_on_rule": ["VanishingGradient"],
    "stopped": {
        "rule": "VanishingGradient",
        "epoch": 1,
        "step": 0,
        "reason": "stopped by rule VanishingGradient after epoch 1 (--stop-on-rule)",
    },
}


def test_wait_follows_the_job_logs_and_rules(aws, capsys, tmp_path):
    logs = boto3.client("logs", region_name=REGION)
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName="byoc-waited/algo-1-1700000000")
    rule_line = "rule=VanishingGradient status=IssuesFound step=0 evidence=mean |gradient/ResNet_bn1.bias| = 0 < 1e-07"
    logs.put_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName="byoc-waited/algo-1-1700000000",
        logEvents=[
            {"timestamp": int(time.time() * 1000), "message": m}
            for m in ("epoch=1 train_loss=0.5000 valid_acc=0.8000", rule_line)
        ],
    )
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="byoc-bucket")
    archive = {
        "rules.json": json.dumps(RULES_JSON).encode(),
        "rules.txt": b"table",
        "profiler-report.html": b"<html>report</html>",
    }
    s3.put_object(Bucket="byoc-bucket", Key="runs/models/byoc-waited/output/output.tar.gz", Body=tar_gz(archive))
    code, out, err = run_cli(
        ["train", *BASE, "--name", "byoc-waited", "--wait", "--poll-seconds", "0", "--download-dir", str(tmp_path)],
        capsys,
    )
    assert code == 0, err
    assert "byoc-waited: Completed" in out and "[algo-1-1700000000] epoch=1 train_loss=0.5000 valid_acc=0.8000" in out
    assert "in-job rule VanishingGradient: IssuesFound at step 0 (mean |gradient/ResNet_bn1.bias| = 0 < 1e-07)" in out
    assert "in-job Debugger rules (1 found issues):" in out
    assert re.search(
        r"^VanishingGradient\s+IssuesFound\s+0\s+mean \|gradient/ResNet_bn1.bias\| = 0 < 1e-07$", out, flags=re.M
    )
    assert re.search(r"^Overfit\s+NoIssuesFound\s+checked 10 saved steps$", out, flags=re.M)
    assert "stopped by rule VanishingGradient after epoch 1" in out
    report = tmp_path / "byoc-waited" / "output" / "profiler-report.html"
    assert f"profiling report: {report.resolve()}" in out and report.read_text() == "<html>report</html>"
    assert "model: s3://" in out


def hostile(kind: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("ok.txt"), io.BytesIO(b""))
        info = tarfile.TarInfo(
            {
                "absolute": "/tmp/evil",
                "dotdot": "data/../../evil",
                "symlink": "escape",
                "hardlink": "hard",
                "device": "dev",
            }[kind]
        )
        if kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "../../.."
        elif kind == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif kind == "device":
            info.type = tarfile.CHRTYPE
        tar.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink", "device"])
def test_hostile_output_archive_is_refused_whole(kind, tmp_path):
    from sagemaker_launch import job_output

    archive = tmp_path / "output.tar.gz"
    archive.write_bytes(hostile(kind))
    with pytest.raises(LaunchError, match="nothing was extracted"):
        job_output.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "ok.txt").exists() and not (tmp_path.parent / "evil").exists()


def cve_2025_4517_archive() -> bytes:
    """The shape of CVE-2025-4517's archive: a chain of symbolic links, each pointing inside the folder on its own,
    whose resolved path runs past PATH_MAX, then a hard link through the chain. Every link passed the old checks."""
    buffer, step = io.BytesIO(), "d" * 247
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        path = ""
        for letter in "abcdefghijklmnop":
            folder = tarfile.TarInfo(posixpath.join(path, step))
            folder.type = tarfile.DIRTYPE
            tar.addfile(folder)
            link = tarfile.TarInfo(posixpath.join(path, letter))
            link.type, link.linkname = tarfile.SYMTYPE, step
            tar.addfile(link)
            path = posixpath.join(path, letter)
        chain = tarfile.TarInfo("chain")
        chain.type, chain.linkname = tarfile.SYMTYPE, path
        tar.addfile(chain)
        hard = tarfile.TarInfo("planted")
        hard.type, hard.linkname = tarfile.LNKTYPE, "chain/x"
        tar.addfile(hard)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "maker", [cve_2025_4517_archive, lambda: in_folder_link(tarfile.SYMTYPE), lambda: in_folder_link(tarfile.LNKTYPE)]
)
def test_every_link_is_refused_even_inside_the_folder(maker, tmp_path):
    from sagemaker_launch import job_output

    archive = tmp_path / "output.tar.gz"
    archive.write_bytes(maker())
    with pytest.raises(LaunchError, match=r"link .*the trainer writes none; nothing was extracted"):
        job_output.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def in_folder_link(kind: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.addfile(tarfile.TarInfo("ok.txt"), io.BytesIO(b""))
        link = tarfile.TarInfo("alias")
        link.type, link.linkname = kind, "ok.txt"
        tar.addfile(link)
    return buffer.getvalue()


def test_corrupt_output_archive_fails_clearly(tmp_path):
    from sagemaker_launch import job_output

    archive = tmp_path / "output.tar.gz"
    archive.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(LaunchError, match=r"is not a readable \.tar\.gz"):
        job_output.safe_extract(archive, tmp_path / "out")
