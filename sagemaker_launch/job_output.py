"""A finished training job's ``output.tar.gz`` (the in-job rules' verdicts, the profiling report): fetched from S3,
extracted without letting any member land outside the folder, and summarised."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from byoc_contract.rules import ISSUES, OUTPUT_FILE, verdict_table
from sagemaker_launch import aws, validate
from sagemaker_launch.errors import LaunchError

MAX_ARCHIVE_BYTES = 1 << 30  # the download
MAX_EXTRACTED_BYTES = 4 << 30  # what its members may unpack to
MAX_MEMBERS = 20_000
REPORT = "profiler-report.html"


def output_uri(job: dict) -> str:
    """Where SageMaker put the job's output data: <S3OutputPath>/<job>/output/output.tar.gz."""
    return f"{job['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job['TrainingJobName']}/output/output.tar.gz"


def download(s3, uri: str, folder: Path) -> Path | None:
    """The archive at ``uri`` saved under ``folder``; None when the job left none."""
    bucket, key = validate.s3_parts(uri)
    head = aws.find(s3.head_object, "404", Bucket=bucket, Key=key)
    if head is None:
        return None
    if head["ContentLength"] > MAX_ARCHIVE_BYTES:
        raise LaunchError(
            f"{uri} is {head['ContentLength'] / 2**30:.1f} GiB, more than the {MAX_ARCHIVE_BYTES >> 30} GiB --wait "
            "fetches; download it with `aws s3 cp`."
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "output.tar.gz"
    s3.download_file(bucket, key, str(path))
    return path


def _refusal(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` may not be extracted, or None. Only regular files and folders pass: the trainer never writes
    links, and a link, however harmless it looks on its own, is how CVE-2025-4517 escapes the folder on Pythons
    before 3.11.13 / 3.12.11 / 3.13.4, whatever the extraction filter says."""
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    if ".." in name.replace("\\", "/").split("/"):
        return "a '..' component"
    if member.issym() or member.islnk():
        return (
            f"a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname[:200]!r}); the trainer writes none"
        )
    if not (member.isfile() or member.isdir()):
        return "a device, FIFO or other special file"
    return None


def safe_extract(archive: Path, folder: Path) -> None:
    """Extract ``archive`` into ``folder`` after checking every member; a hostile archive is refused whole."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members, total = [], 0
            for member in tar:
                reason = _refusal(member)
                if reason:
                    raise LaunchError(
                        f"{archive} holds {member.name!r}, {reason}; nothing was extracted. The archive did not come "
                        "from our trainer."
                    )
                members.append(member)
                total += member.size
                if len(members) > MAX_MEMBERS or total > MAX_EXTRACTED_BYTES:
                    raise LaunchError(
                        f"{archive} unpacks to more than {MAX_MEMBERS} files or {MAX_EXTRACTED_BYTES >> 30} GiB; "
                        "nothing was extracted."
                    )
            tar.extractall(folder, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise LaunchError(f"{archive} is not a readable .tar.gz ({exc}); nothing more was extracted.") from None


def summarise(folder: Path) -> str:
    """The verdict table from ``rules.json`` and where the profiling report is, in words."""
    lines = []
    rules_file = next(iter(sorted(folder.rglob(OUTPUT_FILE))), None)
    if rules_file is None:
        lines.append(
            f"no {OUTPUT_FILE} in the job's output (the in-job rules were off, or the job failed before its first "
            "epoch ended)"
        )
    else:
        try:
            summary = json.loads(rules_file.read_text())
            rows = [r for r in summary["rules"] if isinstance(r, dict) and {"rule", "status"} <= set(r)]
        except (ValueError, KeyError, TypeError) as exc:
            raise LaunchError(f"{rules_file} is not the trainer's rules.json ({exc}).") from None
        found = sum(r["status"] == ISSUES for r in rows)
        lines += [f"in-job Debugger rules ({found} found issues):", verdict_table(rows)]
        if summary.get("stopped"):
            lines.append(str(summary["stopped"].get("reason", summary["stopped"])))
    report = next(iter(sorted(folder.rglob(REPORT))), None)
    lines.append(
        f"profiling report: {report.resolve()}" if report else f"no {REPORT} in the job's output (profiling was off)"
    )
    return "\n".join(lines)


def fetch_and_summarise(s3, job: dict, download_dir: str) -> str:
    """Download and extract the job's output.tar.gz under ``download_dir/<job>``; returns the summary to print."""
    folder = Path(download_dir) / job["TrainingJobName"]
    uri = output_uri(job)
    archive = download(s3, uri, folder)
    if archive is None:
        return f"no output.tar.gz at {uri} (the job wrote nothing to /opt/ml/output/data)"
    extracted = folder / "output"
    safe_extract(archive, extracted)
    return f"job output: {uri} -> {extracted}\n" + summarise(extracted)
