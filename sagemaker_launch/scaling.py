"""Application Auto Scaling of an endpoint's variant: what to register, what is registered now, and keeping it
across an update that AWS refuses while the variant is registered.

Real-time endpoints track invocations per instance. Asynchronous endpoints track their queue
(``ApproximateBacklogSizePerInstance``), and, since an empty fleet has no per-instance backlog to track, a step policy
driven by a CloudWatch alarm on ``HasBacklogWithoutCapacity`` adds the first instance back when requests wait and
no instance is running (AWS's documented set-up for scaling an asynchronous endpoint from zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sagemaker_launch import aws

VARIANT = "AllTraffic"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
STEP_COOLDOWN_SECONDS = 300  # after the step policy adds an instance, it waits this long before adding another


@dataclass(frozen=True)
class Plan:
    """What the variant's scaling should hold."""

    min_instances: int
    max_instances: int
    target: float  # invocations per instance per minute, or (asynchronous) queued requests per instance
    scale_in_cooldown: int
    scale_out_cooldown: int
    asynchronous: bool


@dataclass
class Registered:
    """The variant's scaling as Application Auto Scaling describes it, and our alarm, to put back as it was."""

    target: dict
    policies: list[dict] = field(default_factory=list)


def scalable_target(endpoint: str) -> dict:
    """What Application Auto Scaling calls the instance count of the endpoint's variant."""
    return {
        "ServiceNamespace": "sagemaker",
        "ResourceId": f"endpoint/{endpoint}/variant/{VARIANT}",
        "ScalableDimension": DIMENSION,
    }


def alarm_name(endpoint: str) -> str:
    """The CloudWatch alarm that wakes an asynchronous endpoint from zero instances (named like the endpoint:
    ``byoc-*``)."""
    return f"{endpoint}-has-backlog-without-capacity"


def target_request(endpoint: str, low: int, high: int) -> dict:
    """RegisterScalableTarget, tagged: the IAM policy lets the launcher change only targets with our tag."""
    return {
        **scalable_target(endpoint),
        "MinCapacity": low,
        "MaxCapacity": high,
        "Tags": {aws.CREATED_BY["Key"]: aws.CREATED_BY["Value"]},
    }


def policy_requests(plan: Plan, endpoint: str) -> list[dict]:
    """PutScalingPolicy requests: target tracking, and for an asynchronous endpoint the step policy out of zero."""
    if plan.asynchronous:
        metric = {
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
                "Statistic": "Average",
            }
        }
    else:
        metric = {"PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}
    tracking = {
        "PolicyName": f"{endpoint}-{'backlog' if plan.asynchronous else 'invocations'}",
        **scalable_target(endpoint),
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": plan.target,
            **metric,
            "ScaleInCooldown": plan.scale_in_cooldown,
            "ScaleOutCooldown": plan.scale_out_cooldown,
        },
    }
    if not plan.asynchronous:
        return [tracking]
    step = {
        "PolicyName": f"{endpoint}-from-zero",
        **scalable_target(endpoint),
        "PolicyType": "StepScaling",
        "StepScalingPolicyConfiguration": {
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": STEP_COOLDOWN_SECONDS,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
        },
    }
    return [tracking, step]


def alarm_request(endpoint: str, policy_arn: str) -> dict:
    """PutMetricAlarm: requests wait while no instance runs (two minutes of it) -> the step policy adds one."""
    return {
        "AlarmName": alarm_name(endpoint),
        "AlarmDescription": f"byoc-vision: {endpoint} has queued requests and no instance",
        "MetricName": "HasBacklogWithoutCapacity",
        "Namespace": "AWS/SageMaker",
        "Statistic": "Average",
        "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
        "Period": 60,
        "EvaluationPeriods": 2,
        "DatapointsToAlarm": 2,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
        "AlarmActions": [policy_arn],
        "Tags": [aws.CREATED_BY],
    }


def put_policies(scaling, cloudwatch, endpoint: str, policies: list[dict]) -> None:
    """PutScalingPolicy for each; a step policy gets its alarm (a step policy does nothing without one)."""
    for policy in policies:
        arn = aws.call(scaling.put_scaling_policy, **policy)["PolicyARN"]
        if policy["PolicyType"] == "StepScaling":
            aws.call(cloudwatch.put_metric_alarm, **alarm_request(endpoint, arn))


def apply(scaling, cloudwatch, endpoint: str, plan: Plan) -> None:
    """Register the variant and put its policies (both calls replace what was there)."""
    aws.call(scaling.register_scalable_target, **target_request(endpoint, plan.min_instances, plan.max_instances))
    put_policies(scaling, cloudwatch, endpoint, policy_requests(plan, endpoint))


POLICY_FIELDS = (
    "PolicyName",
    "ServiceNamespace",
    "ResourceId",
    "ScalableDimension",
    "PolicyType",
    "TargetTrackingScalingPolicyConfiguration",
    "StepScalingPolicyConfiguration",
)


def targets(scaling, endpoint: str) -> list[dict]:
    """The variant's scalable target as described (empty when it is not registered)."""
    return aws.call(
        scaling.describe_scalable_targets,
        ServiceNamespace="sagemaker",
        ResourceIds=[scalable_target(endpoint)["ResourceId"]],
        ScalableDimension=DIMENSION,
    )["ScalableTargets"]


def registered(scaling, endpoint: str) -> Registered | None:
    """The variant's scaling now, or None when it is not registered."""
    found = targets(scaling, endpoint)
    if not found:
        return None
    policies = aws.call(scaling.describe_scaling_policies, **scalable_target(endpoint))["ScalingPolicies"]
    return Registered(target=found[0], policies=[{k: p[k] for k in POLICY_FIELDS if k in p} for p in policies])


def remove(scaling, cloudwatch, endpoint: str) -> None:
    """Deregister the variant (Application Auto Scaling deletes its policies) and delete our alarm, if any."""
    if targets(scaling, endpoint):  # asked first: the error for a target that is not there differs between AWS and moto
        aws.call(scaling.deregister_scalable_target, **scalable_target(endpoint))
    aws.call(cloudwatch.delete_alarms, AlarmNames=[alarm_name(endpoint)])


def restore(scaling, cloudwatch, endpoint: str, saved: Registered) -> None:
    """Put back what ``registered`` described: the same bounds and the same policies (and our alarm)."""
    aws.call(
        scaling.register_scalable_target,
        **target_request(endpoint, saved.target["MinCapacity"], saved.target["MaxCapacity"]),
    )
    put_policies(scaling, cloudwatch, endpoint, saved.policies)


def describe(saved: Registered) -> str:
    """``1-4 instances (policies: a, b)``."""
    names = ", ".join(p["PolicyName"] for p in saved.policies) or "none"
    return f"{saved.target['MinCapacity']}-{saved.target['MaxCapacity']} instances (policies: {names})"
