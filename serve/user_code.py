"""A user's ``code/inference.py`` in the artifact, with the SageMaker inference toolkit's semantics: its
``model_fn``, ``input_fn``, ``predict_fn``, ``output_fn`` or ``transform_fn`` replace steps of our pipeline
(``serve.pipeline``), each may take an extra ``context`` argument, and ``code/requirements.txt`` is installed
first: per model, into its own folder, under a lock, with a timeout, from wheels shipped in ``code/`` if it can."""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import inspect
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)
HANDLER_FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")


class RequirementsError(RuntimeError):
    """code/requirements.txt could not be installed; the message says why and what to do."""


@dataclass
class Context:
    """What the toolkit's context offers a handler: the model folder and the request's headers."""

    model_dir: str
    request_headers: dict = field(default_factory=dict)

    @property
    def system_properties(self) -> dict:
        return {"model_dir": self.model_dir, "gpu_id": None}


def call(function, *args, context: Context):
    """Call with or without the trailing context argument, by the function's parameter count (as the toolkit does)."""
    count = len(inspect.signature(function).parameters)
    if count == len(args):
        return function(*args)
    if count == len(args) + 1:
        return function(*args, context)
    raise TypeError(f"{function.__name__} takes {count} arguments but {len(args)} (or {len(args) + 1} with context) are given")


def install_requirements(model_dir: Path, packages_root: Path, timeout: float) -> Path | None:
    """Install ``code/requirements.txt`` once into a folder of its own (keyed by the model folder and the file's
    contents); None without one. Offline first when ``code/`` ships wheels, then the index with those wheels."""
    code = model_dir / "code"
    requirements = code / "requirements.txt"
    if not requirements.is_file():
        return None
    key = hashlib.sha256(str(model_dir.resolve()).encode() + b"\0" + requirements.read_bytes()).hexdigest()[:16]
    target = packages_root / key
    packages_root.mkdir(parents=True, exist_ok=True)
    with open(packages_root / f"{key}.lock", "w") as lock:
        acquire(lock, timeout)
        if (target / ".installed").is_file():
            return target
        started = time.monotonic()
        with tempfile.TemporaryDirectory(dir=packages_root) as staging:
            pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", staging, "-r", str(requirements)]
            attempts = [[*pip, "--no-index", "--find-links", str(code)]] if any(code.glob("*.whl")) else []
            attempts.append([*pip, "--prefer-binary", "--find-links", str(code)])
            reason = ""
            for command in attempts:
                left = timeout - (time.monotonic() - started)
                try:
                    subprocess.run(command, check=True, capture_output=True, text=True, timeout=max(left, 1), cwd=code)
                except subprocess.TimeoutExpired:
                    raise RequirementsError(f"installing {requirements} took over {timeout:g} s (SERVE_REQUIREMENTS_TIMEOUT_SECONDS); ship wheels in code/.") from None
                except subprocess.CalledProcessError as exc:
                    lines = (exc.stderr or exc.stdout or "").strip().splitlines()
                    reason = lines[-1] if lines else f"pip exited with {exc.returncode}"
                    continue
                shutil.rmtree(target, ignore_errors=True)
                Path(staging).rename(target)
                (target / ".installed").touch()
                log.info("installed %s into %s in %.1f s", requirements, target, time.monotonic() - started)
                return target
        raise RequirementsError(f"pip could not install {requirements}: {reason}. Ship the wheels in code/ for an offline endpoint.")


def acquire(lock, timeout: float) -> None:
    """An exclusive lock on the open file ``lock``, waiting at most ``timeout`` s (another worker may be installing)."""
    until = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > until:
                raise RequirementsError(f"another process held the requirements lock {lock.name} for over {timeout:g} s") from None
            time.sleep(0.1)


def user_module(model_dir: Path, program: str, packages_root: Path, timeout: float) -> ModuleType | None:
    """Import ``code/<program>`` from the model folder, after installing its requirements; None without one."""
    code = model_dir / "code"
    script = code / program
    if not script.is_file():
        return None
    packages = install_requirements(model_dir, packages_root, timeout)
    if packages is not None:
        sys.path.insert(0, str(packages))
    sys.path.insert(0, str(code))
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    overridden = [name for name in HANDLER_FUNCTIONS if hasattr(module, name)]
    log.info("using %s from %s", ", ".join(overridden) or "no handler functions", script)
    return module
