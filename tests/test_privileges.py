"""Reading a root-only model folder for the service user (``serve.privileges``): which folders need a copy, what the
copy holds (regular files and folders only: a link could point at a root-only file, a FIFO would hang the copy), and
the multi-model root helper that copies only folders under the models root."""

import os
import pwd
import stat

import pytest

from serve import privileges

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="copies as root, as the serving image does when SageMaker starts it"
)


@pytest.fixture
def nobody() -> privileges.ServiceUser:
    entry = pwd.getpwnam("nobody")
    return privileges.ServiceUser("nobody", entry.pw_uid, entry.pw_gid, (entry.pw_gid,), "/")


def model_folder(root):
    folder = root / "model"
    (folder / "code").mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    (folder / "code" / "inference.py").write_text("")
    (folder / "secret-link").symlink_to("/etc/shadow")
    os.mkfifo(folder / "pipe")
    for path in [root, folder, *folder.rglob("*")]:
        if not path.is_symlink() and not stat.S_ISFIFO(path.lstat().st_mode):
            path.chmod(0o700 if path.is_dir() else 0o600)
    return folder


def test_a_root_only_folder_is_copied_with_its_regular_files_alone(tmp_path, nobody):
    folder = model_folder(tmp_path)
    assert not privileges.readable_by(folder, nobody)
    staged = privileges.stage(folder, nobody, tmp_path / "staging")
    assert sorted(str(p.relative_to(staged)) for p in staged.rglob("*")) == ["code", "code/inference.py", "model.json"]
    assert all(p.stat().st_uid == nobody.uid for p in [staged, *staged.rglob("*")])
    assert (
        tmp_path / "staging"
    ).stat().st_uid == nobody.uid  # the service user removes a copy when it unloads the model
    for path in [staged, *staged.rglob("*")]:
        info = path.stat()
        assert privileges.can_read(info.st_mode, info.st_uid, info.st_gid, nobody, 5 if path.is_dir() else 4), path


def test_only_a_folder_the_user_cannot_read_needs_a_copy(nobody):
    assert privileges.can_read(0o644, 0, 0, nobody, 4) and privileges.can_read(0o755, 0, 0, nobody, 5)
    assert not privileges.can_read(0o600, 0, 0, nobody, 4) and not privileges.can_read(0o700, 0, 0, nobody, 5)
    assert privileges.can_read(0o600, nobody.uid, 0, nobody, 4) and privileges.can_read(0o640, 0, nobody.gid, nobody, 4)
    assert not privileges.can_read(0o044, nobody.uid, 0, nobody, 4)  # the owner's bits decide for the owner


def test_the_root_helper_copies_only_folders_under_the_models_root(tmp_path, nobody, monkeypatch):
    monkeypatch.setenv("SERVE_MULTI_MODEL_ROOT", str(tmp_path / "models"))
    monkeypatch.setenv("SERVE_STAGING_DIR", str(tmp_path / "staging"))
    folder = model_folder(tmp_path / "models" / "a")
    outside = model_folder(tmp_path / "elsewhere")
    helper = privileges.Helper.start(nobody)
    try:
        staged = helper.stage(folder)
        assert staged.parent == tmp_path / "staging" and (staged / "model.json").stat().st_uid == nobody.uid
        for refused in (outside, tmp_path / "models", tmp_path / "models" / "a" / ".." / ".." / "elsewhere" / "model"):
            with pytest.raises(privileges.StagingError, match="is not a model folder under") as caught:
                helper.stage(refused)
            assert caught.value.status == 400
        with pytest.raises(privileges.StagingError, match="does not exist") as caught:
            helper.stage(tmp_path / "models" / "missing" / "model")
        assert caught.value.status == 404
    finally:
        helper.process.stdin.close()
        helper.process.wait(10)
