"""``byoc_machine``: the cores a process may use under cgroup v1 and v2 CPU quotas, and the CPU's flags."""

import os

from byoc_machine import cgroup_cpu_limit, cores_explained, cpu_flags, cpu_model, usable_cores

AFFINITY = len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_in_the_process_cgroup_and_above_it(tmp_path):
    (tmp_path / "kubepods" / "pod1").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "kubepods" / "cpu.max").write_text("400000 100000\n")  # the parent's limit binds too
    (tmp_path / "kubepods" / "pod1" / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/kubepods/pod1\n") == 1.5
    assert usable_cores(tmp_path, "0::/kubepods/pod1\n") == min(AFFINITY, 2)  # 1.5 cores: 2 threads
    (tmp_path / "kubepods" / "pod1" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path, "0::/kubepods/pod1\n") == 4.0


def test_cgroup_v1_cfs_quota(tmp_path):
    folder = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("100000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    proc = "12:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
    assert cgroup_cpu_limit(tmp_path, proc) == 1.0
    assert usable_cores(tmp_path, proc) == 1
    assert cores_explained(tmp_path, proc) == f"1 usable core (cgroup CPU quota 1, {AFFINITY} in affinity)"
    (folder / "cpu.cfs_quota_us").write_text("-1\n")  # unlimited
    assert cgroup_cpu_limit(tmp_path, proc) is None and usable_cores(tmp_path, proc) == AFFINITY


def test_no_cgroup_files_means_the_affinity(tmp_path):
    assert cgroup_cpu_limit(tmp_path, "0::/\n") is None
    assert usable_cores(tmp_path, "") == AFFINITY
    assert "no cgroup CPU quota" in cores_explained(tmp_path, "")


def test_garbage_in_the_cgroup_files_is_not_a_limit(tmp_path):
    (tmp_path / "cpu.max").write_text("max\n")
    assert cgroup_cpu_limit(tmp_path, "0::/\n") is None


def test_cpu_flags_on_x86_and_arm64():
    x86 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 avx512_bf16 amx_tile\n"
    arm = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd bf16 i8mm\n"
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512_bf16", "amx_tile"} and cpu_model(x86) == "AMD EPYC 9R14"
    assert {"bf16", "i8mm"} <= cpu_flags(arm) and cpu_model(arm) == "unknown"
    assert cpu_flags("") == frozenset()
