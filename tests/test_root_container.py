"""The serving image started as SageMaker starts it (issue 26): as root, on model folders SageMaker extracted as root
with the archive's own modes (0600 files in 0700 folders), single- and multi-model; the model is read as root and
everything after start-up runs as the unprivileged model-server. And a multi-model endpoint out of memory: 507."""

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
from aws_stand_in import free_port
from test_container import wait_for_ping
from test_serve_container import start_server

pytestmark = pytest.mark.container


def root_only(source: Path, target: Path) -> Path:
    """A copy of ``source`` owned by root, folders 0700 and files 0600 (a model.tar.gz packed under umask 077)."""
    shutil.copytree(source, target)
    subprocess.run(["chown", "-R", "0:0", str(target)], check=True)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o700 if path.is_dir() else 0o600)
    return target


def in_container(name: str, script: str) -> str:
    return subprocess.run(
        ["docker", "exec", name, "python", "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()


USERS_OF_PROCESSES = """
import os, pwd
for pid in sorted(p for p in os.listdir('/proc') if p.isdigit()):
    try:
        status = open(f'/proc/{pid}/status').read(); cmd = open(f'/proc/{pid}/cmdline').read().replace(chr(0), ' ')
    except OSError:
        continue
    if 'python -c' in cmd or not cmd:
        continue
    uid = int(next(l for l in status.splitlines() if l.startswith('Uid:')).split()[1])
    print(pwd.getpwuid(uid).pw_name, cmd[:80])
"""


def users(name: str) -> list[tuple[str, str]]:
    return [tuple(line.split(" ", 1)) for line in in_container(name, USERS_OF_PROCESSES).splitlines()]


def logs(name: str) -> str:
    result = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
    return result.stdout + result.stderr


def test_single_model_folder_of_root_only_files_is_served_by_the_unprivileged_user(
    serve_image, trained_run, tmp_path, fashion
):
    model = root_only(trained_run[0] / "model", tmp_path / "model")
    name, port = start_server(serve_image, model)
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        png = next((fashion / "test" / "Sneaker").iterdir()).read_bytes()
        answer = httpx.post(
            f"http://127.0.0.1:{port}/invocations", content=png, headers={"Content-Type": "image/png"}, timeout=30
        )
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"]
        running = users(name)
        print("processes after start-up:", running)
        assert running and all(user == "model-server" for user, _ in running), running
        assert "started as root: read /opt/ml/model as root into /tmp/byoc-staged-models/" in logs(name)
        assert "now serving as model-server" in logs(name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_readable_model_folder_is_served_unprivileged_without_a_copy(serve_image, trained_run):
    """What `docker compose up` does: the trainer's files are world-readable, so nothing is copied."""
    name, port = start_server(serve_image, trained_run[0] / "model")
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        assert all(user == "model-server" for user, _ in users(name))
        assert "the model folder is readable by model-server, now serving as it" in logs(name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_multi_model_folders_of_root_only_files_load_and_run_unprivileged(serve_image, trained_run, tmp_path, fashion):
    root = tmp_path / "models"
    root_only(trained_run[0] / "model", root / "first" / "model")
    root_only(trained_run[0] / "model", root / "second" / "model")
    subprocess.run(["chmod", "0700", str(root)], check=True)
    name, port = start_server(serve_image, root, env=("SAGEMAKER_MULTI_MODEL=true",), mount="/opt/ml/models")
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        png = next((fashion / "test" / "Bag").iterdir()).read_bytes()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for model in ("first", "second"):
                assert (
                    client.post(
                        "/models", json={"model_name": model, "url": f"/opt/ml/models/{model}/model"}
                    ).status_code
                    == 200
                )
                assert (
                    client.post(
                        f"/models/{model}/invoke", content=png, headers={"Content-Type": "image/png"}
                    ).status_code
                    == 200
                )
            running = users(name)
            print("processes after loading:", running)
            helper = [cmd for user, cmd in running if "serve.privileges" in cmd]
            assert len(helper) == 1 and all(
                user == "model-server" for user, cmd in running if "serve.privileges" not in cmd
            ), running
            assert any(
                "java" in cmd for user, cmd in running if user == "model-server"
            )  # multi-model-server and its workers
            staged = in_container(name, "import os; print(len(os.listdir('/tmp/byoc-staged-models')))")
            assert client.delete("/models/first").status_code == 200
            assert (
                int(in_container(name, "import os; print(len(os.listdir('/tmp/byoc-staged-models')))"))
                == int(staged) - 1
            )  # the copy goes with the model
        assert "a root helper copies the model folders it cannot read" in logs(name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def container_memory(name: str) -> int:
    """The container's memory use (cgroup v2, else v1), less its reclaimable file cache."""
    return int(in_container(name, "from serve import memory; print(memory.used_bytes())"))


def test_a_model_that_does_not_fit_in_memory_is_a_507_and_unloading_frees_memory(
    serve_image, trained_run, tmp_path, fashion
):
    """In a container of 1.2 GB, models are loaded until one would not fit: it is refused with 507 before any
    process is killed, the loaded ones keep answering, and unloading one gives its memory back."""
    root = tmp_path / "models"
    for n in range(8):
        shutil.copytree(trained_run[0] / "model", root / f"m{n}" / "model")
    name, port = f"byoc-mme-mem-{uuid.uuid4().hex[:8]}", free_port()
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--memory",
            "1200m",
            "--memory-swap",
            "1200m",
            "-e",
            "SAGEMAKER_MULTI_MODEL=true",
            "-p",
            f"127.0.0.1:{port}:8080",
            "-v",
            f"{root}:/opt/ml/models:ro",
            serve_image,
            "serve",
        ],
        check=True,
        capture_output=True,
    )
    try:
        wait_for_ping(f"http://127.0.0.1:{port}/ping", 120)
        png = next((fashion / "test" / "Coat").iterdir()).read_bytes()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            time.sleep(2)
            before, loaded, refused = container_memory(name), [], None
            for n in range(8):
                answer = client.post("/models", json={"model_name": f"m{n}", "url": f"/opt/ml/models/m{n}/model"})
                if answer.status_code == 507:
                    refused = answer.json()
                    break
                assert answer.status_code == 200, answer.text
                loaded.append(f"m{n}")
            print(
                f"loaded {len(loaded)} models, then: {refused}; memory before {before >> 20} MB, after "
                f"{container_memory(name) >> 20} MB"
            )
            assert (
                refused
                and refused["error"] == "insufficient memory"
                and "unload a model" in refused["detail"]
                and len(loaded) >= 1
            )
            for model in loaded:
                assert (
                    client.post(
                        f"/models/{model}/invoke", content=png, headers={"Content-Type": "image/png"}
                    ).status_code
                    == 200
                )
            full = container_memory(name)
            for model in loaded:
                assert client.delete(f"/models/{model}").status_code == 200
            time.sleep(2)
            freed = container_memory(name)
            print(f"memory with {len(loaded)} models {full >> 20} MB, after unloading them {freed >> 20} MB")
            assert freed < before + (full - before) * 0.25
            assert (
                client.post("/models", json={"model_name": "again", "url": "/opt/ml/models/m0/model"}).status_code
                == 200
            )
        state = json.loads(
            subprocess.run(["docker", "inspect", name], capture_output=True, text=True, check=True).stdout
        )[0]["State"]
        assert state["Running"] and not state["OOMKilled"]
        assert "Killed" not in logs(name) and "worker died" not in logs(name).lower()
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
