"""Started as root, as SageMaker starts containers: read what the service user cannot, then serve as that user.

SageMaker extracts ``model.tar.gz`` as root with the archive's own modes, so a model folder of 0600 files in 0700
folders is common, and only root can read it. The server reads such a folder as root once, copying its regular files
into a folder the service user owns, then drops to that user before it serves a request. A multi-model endpoint
loads models later, so a small root helper (``python -m serve.privileges``, one job: copy a folder under
/opt/ml/models) stays behind for them; everything that parses requests or runs a model runs unprivileged.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import shutil
import stat
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from serve.settings import Settings

log = logging.getLogger("serve")
SERVICE_USER = "model-server"
MAX_STAGED_FILES = 100_000


class StagingError(RuntimeError):
    """A model folder could not be copied for the service user; the message says why, ``status`` what HTTP calls it
    (404: no such model folder; 507: no room for the copy)."""

    def __init__(self, message: str, status: int = 404):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServiceUser:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str

    @classmethod
    def find(cls, name: str = SERVICE_USER) -> ServiceUser | None:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        groups = tuple(sorted({entry.pw_gid, *(g.gr_gid for g in grp.getgrall() if name in g.gr_mem)}))
        return cls(name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def can_read(mode: int, owner: int, group: int, user: ServiceUser, bits: int) -> bool:
    """Whether ``user`` has ``bits`` (4 read, 1 search; 5 both) on an entry of that mode and owner."""
    shift = 6 if owner == user.uid else 3 if group in user.groups else 0
    return (mode >> shift) & bits == bits


def readable_by(folder: Path, user: ServiceUser) -> bool:
    """Whether ``user`` can read every file of ``folder`` and search every folder on the way (from the modes; a
    folder this process cannot even look into, or find, counts as unreadable)."""
    try:
        return modes_allow(folder, user)
    except OSError:
        return False


def modes_allow(folder: Path, user: ServiceUser) -> bool:
    for path in [*reversed(folder.parents), folder]:
        info = path.stat()
        if not can_read(info.st_mode, info.st_uid, info.st_gid, user, 1):
            return False
    for root, folders, files in os.walk(folder):
        for name in [".", *folders, *files]:
            info = os.lstat(os.path.join(root, name))
            needed = 5 if stat.S_ISDIR(info.st_mode) else 4 if stat.S_ISREG(info.st_mode) else 0
            if needed and not can_read(info.st_mode, info.st_uid, info.st_gid, user, needed):
                return False
    return True


def stage(folder: Path, user: ServiceUser, staging_root: Path) -> Path:
    """A copy of ``folder``'s regular files and folders (links, devices and FIFOs are left out: a link could point
    at a file only root may read) in a new folder ``user`` owns, after checking the disk has room for it."""
    entries, total = [], 0
    for root, _folders, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                entries.append(path)
                total += info.st_size
            if len(entries) > MAX_STAGED_FILES:
                raise StagingError(
                    f"{folder} holds more than {MAX_STAGED_FILES} files; a model folder needs far fewer."
                )
    staging_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chown(staging_root, user.uid, user.gid)  # the service user removes a model's copy when it unloads it
    free = shutil.disk_usage(staging_root).free
    if total > free * 0.9:
        raise StagingError(
            f"{folder} holds {total >> 20} MB and {staging_root} has {free >> 20} MB free: give the container more "
            "disk, or make the model's files readable by others (chmod -R a+rX before packing model.tar.gz).",
            507,
        )
    target = staging_root / uuid.uuid4().hex
    for source in entries:
        copy = target / source.relative_to(folder)
        copy.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        shutil.copyfile(source, copy, follow_symlinks=False)
        os.chmod(copy, 0o640)
    target.mkdir(mode=0o750, exist_ok=True)
    for root, folders, files in os.walk(target):
        for name in [".", *folders, *files]:
            os.chown(os.path.join(root, name), user.uid, user.gid)
    return target


def drop_to(user: ServiceUser) -> None:
    """This process, for good, as ``user``: groups first, then the group, then the user (nothing can undo it)."""
    os.setgroups(list(user.groups))
    os.setgid(user.gid)
    os.setuid(user.uid)
    os.environ.update(HOME=user.home, USER=user.name, LOGNAME=user.name)


def run_as_service_user(settings: Settings) -> Path:
    """Started as root with a service user in the image: drops this process to that user and returns the model
    folder to serve (a staged copy under SERVE_STAGING_DIR when the service user cannot read the model folder); a
    multi-model endpoint gets the root helper (``HELPER``). Otherwise nothing changes. One log line says which."""
    global HELPER
    model_dir = settings.model_dir
    user = ServiceUser.find() if os.geteuid() == 0 else None
    if user is None:
        who = "root, with no service user in the image" if os.geteuid() == 0 else f"uid {os.geteuid()}, as started"
        log.info("serving as %s", who)
        return model_dir
    if settings.multi_model:
        HELPER = Helper.start(user)
        drop_to(user)
        log.info(
            "started as root: serving as %s (uid %d); a root helper copies the model folders it cannot read",
            user.name,
            user.uid,
        )
        return model_dir
    if model_dir.is_dir() and not readable_by(model_dir, user):
        staged = stage(model_dir, user, settings.staging_dir)
        drop_to(user)
        log.info(
            "started as root: read %s as root into %s, now serving as %s (uid %d)",
            model_dir,
            staged,
            user.name,
            user.uid,
        )
        return staged
    drop_to(user)
    log.info("started as root: the model folder is readable by %s, now serving as it (uid %d)", user.name, user.uid)
    return model_dir


HELPER: Helper | None = None  # the multi-model front's root helper, when it dropped root


class Helper:
    """The front's handle on the root helper: one request at a time over its standard input and output."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.lock = process, threading.Lock()

    @classmethod
    def start(cls, user: ServiceUser) -> Helper:
        command = [sys.executable, "-m", "serve.privileges", user.name, str(user.uid), str(user.gid)]
        return cls(subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))

    def stage(self, folder: Path) -> Path:
        """``folder`` copied for the service user (it must lie under the models root; the helper checks again)."""
        with self.lock:
            if self.process.poll() is not None:
                raise StagingError(
                    f"the root helper exited with code {self.process.returncode}; restart the container."
                )
            self.process.stdin.write(json.dumps({"folder": str(folder)}) + "\n")
            self.process.stdin.flush()
            answer = json.loads(self.process.stdout.readline() or '{"error": "the root helper stopped answering"}')
        if "error" in answer:
            raise StagingError(answer["error"], answer.get("status", 404))
        return Path(answer["staged"])


def helper_main(name: str, uid: str, gid: str) -> None:
    """The root helper's loop: each line ``{"folder": ...}`` under SERVE_MULTI_MODEL_ROOT is answered with
    ``{"staged": ...}`` (a copy under SERVE_STAGING_DIR the service user owns) or ``{"error": ...}``; nothing else
    is done."""
    settings = Settings.from_env()
    root, user = settings.models_root.resolve(), ServiceUser(name, int(uid), int(gid), (int(gid),), "/")
    for line in sys.stdin:
        try:
            folder = Path(json.loads(line)["folder"]).resolve()
            if not folder.is_relative_to(root) or folder == root:
                raise StagingError(f"{folder} is not a model folder under {root}", 400)
            if not folder.is_dir():
                raise StagingError(f"{folder} does not exist: SageMaker extracts model.tar.gz to {root}/<name>/model.")
            answer = {"staged": str(stage(folder, user, settings.staging_dir))}
        except (StagingError, OSError, ValueError, KeyError, TypeError) as exc:
            answer = {"error": str(exc), "status": getattr(exc, "status", 404)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    helper_main(*sys.argv[1:4])
