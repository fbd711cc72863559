"""docs/kserve.md's InferenceService manifests, loaded into KServe's own Python SDK model (``V1beta1InferenceService``,
PyPI ``kserve``, in a cached environment of its own): every field they set must survive the round trip."""

import json
import re
import subprocess

import pytest
import yaml
from conftest import REPO
from sdk_support import cached_python

KSERVE_SDK = ("kserve>=0.15", "pyyaml>=6")
ROUND_TRIP = """
import json, re, sys
import kubernetes.client
import kserve.models
from kserve import V1beta1InferenceService

def model_class(name):  # KServe's generated models refer to Kubernetes' own (V1Container, V1Probe, ...) by name
    return getattr(kserve.models, name, None) or getattr(kubernetes.client, name)

def load(data, kind):
    if isinstance(kind, str):
        listed = re.fullmatch(r"[Ll]ist\\[(.*)\\]", kind)
        if listed:
            return [load(item, listed.group(1)) for item in data]
        mapped = re.fullmatch(r"dict\\([^,]*, (.*)\\)|Dict\\[[^,]*, (.*)\\]", kind)
        if mapped:
            return {key: load(value, mapped.group(1) or mapped.group(2)) for key, value in data.items()}
        if kind in ("str", "int", "float", "bool", "object", "datetime", "date"):
            return data
        kind = model_class(kind)
    fields = {
        attr: load(data[key], kind.openapi_types[attr]) for attr, key in kind.attribute_map.items() if key in data
    }
    return kind(**fields)

def dump(value):  # the model back to the manifest's field names, leaving out what is unset
    if isinstance(value, list):
        return [dump(item) for item in value]
    if isinstance(value, dict):
        return {key: dump(item) for key, item in value.items()}
    if hasattr(value, "attribute_map"):
        fields = {key: getattr(value, attr) for attr, key in value.attribute_map.items()}
        return {key: dump(field) for key, field in fields.items() if field is not None}
    return value

out = []
for manifest in json.load(sys.stdin):
    service = load(manifest, V1beta1InferenceService)
    assert isinstance(service, V1beta1InferenceService), type(service)
    out.append(dump(service))
json.dump(out, sys.stdout)
"""


def manifests() -> list[dict]:
    text = (REPO / "docs" / "kserve.md").read_text()
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", text, re.S)]


@pytest.fixture(scope="module")
def kserve_python():
    try:
        return cached_python("kserve", KSERVE_SDK)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot install KServe's SDK here ({exc})")


def test_every_field_of_the_manifests_survives_kserve_s_model(kserve_python):
    sent = manifests()
    assert len(sent) == 2 and all(m["kind"] == "InferenceService" for m in sent)
    result = subprocess.run(
        [str(kserve_python), "-c", ROUND_TRIP], input=json.dumps(sent), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == sent


def test_a_misplaced_field_would_fail_the_round_trip(kserve_python):
    """The check can fail: a field KServe does not know is dropped by its model."""
    broken = manifests()[0]
    broken["spec"]["predictor"]["containers"][0]["readinesProbe"] = broken["spec"]["predictor"]["containers"][0].pop(
        "readinessProbe"
    )
    result = subprocess.run(
        [str(kserve_python), "-c", ROUND_TRIP], input=json.dumps([broken]), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) != [broken]


@pytest.mark.parametrize("manifest", manifests(), ids=lambda m: m["metadata"]["name"])
def test_the_predictor_runs_our_image_on_the_protocol_s_health_routes(manifest):
    [container] = manifest["spec"]["predictor"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert "byoc-vision-serve" in container["image"] and container["args"] == ["serve"]
    assert env["SAGEMAKER_MODEL_DIR"] == "/mnt/models" and re.match(r"^(s3|pvc)://", env["STORAGE_URI"])
    port = int(env.get("SAGEMAKER_BIND_TO_PORT", 8080))
    assert [p["containerPort"] for p in container["ports"]] == [port]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port}
