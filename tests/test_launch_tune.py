"""`python -m sagemaker_launch tune` against moto_server: ranges, strategies, objective, warm start, --wait."""

import textwrap

import boto3
import pytest
from aws_stand_in import run_cli
from test_launch_train import BASE, IMAGE, REGION, ROLE

from byoc_contract.rules import DEFAULT_RULES
from sagemaker_launch import cli, tuning
from sagemaker_launch.errors import LaunchError

SPACE = """
lr: {type: continuous, min: 0.0001, max: 0.1, scaling: Logarithmic}
epochs: {type: integer, min: 2, max: 12}
batch-size: {type: categorical, values: [32, 64, 128]}
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(SPACE))
    return str(path)


def request_for(argv: list[str]) -> dict:
    return tuning.tuning_request(cli.build_parser()[0].parse_args(["tune", *BASE, *argv]), REGION)


def test_tune_request_read_back(aws, capsys, space):
    argv = [
        "tune",
        *BASE,
        "--name",
        "byoc-hpo",
        "--search-space",
        space,
        "-p",
        "model=resnet50",
        "--objective",
        "valid_loss",
        "--max-jobs",
        "8",
        "--max-parallel-jobs",
        "2",
        "--early-stopping",
        "Auto",
        "--spot",
        "--tag",
        "team=vision",
    ]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "tuning job byoc-hpo" in out and "Bayesian search, Minimize valid_loss" in out
    job = boto3.client("sagemaker", region_name=REGION).describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="byoc-hpo"
    )
    config = job["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian" and config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize",
        "MetricName": "valid_loss",
    }
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 8, "MaxParallelTrainingJobs": 2}
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["ParameterRanges"] == {
        "ContinuousParameterRanges": [
            {"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.1", "ScalingType": "Logarithmic"}
        ],
        "IntegerParameterRanges": [{"Name": "epochs", "MinValue": "2", "MaxValue": "12", "ScalingType": "Auto"}],
        "CategoricalParameterRanges": [{"Name": "batch-size", "Values": ["32", "64", "128"]}],
    }
    definition = job["TrainingJobDefinition"]
    assert definition[
        "StaticHyperParameters"
    ] == {  # every trial judges the course rules itself (no Debugger in tuning jobs)
        "model": "resnet50",
        "debugger-rules": ",".join(DEFAULT_RULES),
    }
    assert definition["RoleArn"] == ROLE
    assert definition["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert (
        definition["EnableManagedSpotTraining"] is True
        and definition["CheckpointConfig"]["S3Uri"] == "s3://byoc-bucket/runs/checkpoints/byoc-hpo"
    )
    assert [c["ChannelName"] for c in definition["InputDataConfig"]] == ["train"]
    metric_names = {
        d["Name"]
        for d in request_for(["--name", "byoc-x", "--search-space", space])["TrainingJobDefinition"][
            "AlgorithmSpecification"
        ]["MetricDefinitions"]
    }
    assert "valid_loss" in metric_names and "valid_acc" in metric_names  # the objective is one of the job's metrics
    assert "rule_VanishingGradient" in metric_names  # a trial's rule verdicts are metrics of the tuning job too
    with pytest.raises(LaunchError, match="leave out --sagemaker-debugger"):
        request_for(["--name", "byoc-x", "--search-space", space, "--sagemaker-debugger"])


def test_strategies_and_warm_start(space, tmp_path):
    hyperband = request_for(
        ["--name", "byoc-hb", "--search-space", space, "--strategy", "Hyperband", "--hyperband-resource", "2", "30"]
    )
    assert hyperband["HyperParameterTuningJobConfig"]["StrategyConfig"] == {
        "HyperbandStrategyConfig": {"MinResource": 2, "MaxResource": 30}
    }
    grid_space = tmp_path / "grid.yaml"
    grid_space.write_text("batch-size: {values: [32, 64]}\nfinetune: {values: [head, full]}\n")
    grid = request_for(
        ["--name", "byoc-grid", "--search-space", str(grid_space), "--strategy", "Grid", "--max-parallel-jobs", "2"]
    )
    assert "MaxNumberOfTrainingJobs" not in grid["HyperParameterTuningJobConfig"]["ResourceLimits"]
    warm = request_for(
        [
            "--name",
            "byoc-warm",
            "--search-space",
            space,
            "--warm-start-from",
            "byoc-hpo",
            "--warm-start-type",
            "TransferLearning",
        ]
    )
    assert warm["WarmStartConfig"] == {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "byoc-hpo"}],
        "WarmStartType": "TransferLearning",
    }
    assert (
        request_for(["--name", "byoc-r", "--search-space", space, "--strategy", "Random"])[
            "HyperParameterTuningJobConfig"
        ]["HyperParameterTuningJobObjective"]["Type"]
        == "Maximize"
    )


BAD_SPACES = [
    ("lr: {type: continuous, min: 0.1, max: 0.01}", "must be below max"),
    ("lr: {type: continuous, min: 0, max: 0.1, scaling: Logarithmic}", "needs min > 0"),
    ("lr: {type: continuous, min: a, max: 1}", "needs numeric min and max"),
    ("lr: {type: float, min: 0, max: 1}", "type must be continuous, integer or categorical"),
    ("batch-size: {type: categorical, values: []}", "non-empty list"),
    ("- lr", "must map each hyperparameter"),
    ("lr: [unclosed", "not valid YAML"),
]


@pytest.mark.parametrize("text,message", BAD_SPACES, ids=[b[1] for b in BAD_SPACES])
def test_bad_search_spaces_fail_before_any_aws_call(text, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    path = tmp_path / "space.yaml"
    path.write_text(text)
    code, _, err = run_cli(["tune", *BASE, "--search-space", str(path)], capsys)
    assert code == 2 and message in err, err


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--strategy", "Grid"], "categorical ranges only"),
        (["--strategy", "Hyperband", "--early-stopping", "Auto"], "leave --early-stopping Off"),
        (["-p", "lr=0.1"], "both tuned and fixed"),
        (["--max-jobs", "2", "--max-parallel-jobs", "3"], "must be between 1 and --max-jobs"),
        (["--name", "a-tuning-job-name-longer-than-32-characters"], "up to 32"),
    ],
)
def test_bad_tuning_arguments(extra, message, space, capsys, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    code, _, err = run_cli(["tune", *BASE, "--search-space", space, *extra], capsys)
    assert code == 2 and message in err, err


def test_unknown_objective_is_refused_by_the_parser(space, capsys):
    with pytest.raises(SystemExit):
        cli.main(["tune", *BASE, "--search-space", space, "--objective", "valid_speed"])
    assert "invalid choice: 'valid_speed'" in capsys.readouterr().err


def test_missing_search_space(capsys):
    code, _, err = run_cli(["tune", *BASE], capsys)
    assert code == 2 and "no search space" in err


def test_wait_copes_with_the_missing_trials_api_and_reports_the_end(aws, capsys, space):
    code, out, err = run_cli(
        ["tune", *BASE, "--name", "byoc-waited", "--search-space", space, "--wait", "--poll-seconds", "0"], capsys
    )
    assert "this endpoint does not list the trials" in out and "byoc-waited:" in out
    assert code == 0 or "ended" in err, (out, err)


def test_warm_start_takes_at_most_five_parents(space):
    parents = [a for i in range(6) for a in ("--warm-start-from", f"byoc-hpo-{i}")]
    with pytest.raises(LaunchError, match="names 6 tuning jobs; SageMaker learns from at most 5"):
        request_for(["--search-space", space, *parents])
    assert (
        len(request_for(["--search-space", space, *parents[:10]])["WarmStartConfig"]["ParentHyperParameterTuningJobs"])
        == 5
    )
