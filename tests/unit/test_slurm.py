"""SLURM's pure parts, with tables: node records -> inventory, the batch script, job states and
the words the progress page shows. (The real cluster is exercised in tests/hub/test_slurm.py.)"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

import pytest

from hub_plugins.cluster.fit import never_fits
from hub_plugins.spawners.slurm.jobs import (
    JobView, ended_message, explain, job_comment, orphans, parse_job_record, parse_squeue, pending_message,
    queue_position, when,
)
from hub_plugins.spawners.slurm.keyvalue import parse_record, split_top
from hub_plugins.spawners.slurm.nodes import Gres, inventory_from_nodes, parse_gres, type_name, usable
from hub_plugins.spawners.slurm.sbatch import (
    JobRequest, SbatchError, SlurmSettings, check_extra_option, job_name, render_script, sbatch_options,
)

# Recorded from slurm-wlm 22.05.8 (`scontrol show node -d -o`), trimmed.
NODE_IDLE = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=8 CPUTot=8 CPULoad=3.19 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:a100:4 GresDrain=N/A "
    "GresUsed=gpu:a100:0(IDX:N/A) NodeAddr=127.0.0.1 NodeHostName=vm Version=22.05.8 "
    "OS=Linux 6.18.44-fc-v669 #1 SMP PREEMPT_DYNAMIC @0  RealMemory=8000 AllocMem=0 FreeMem=22663 "
    "Sockets=8 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A "
    "Partitions=main  BootTime=2026-11-22T21:12:44 CfgTRES=cpu=8,mem=8000M,billing=8 AllocTRES="
)
NODE_MIXED = NODE_IDLE.replace("NodeName=vm", "NodeName=gpu2").replace(
    "Gres=gpu:a100:4", "Gres=gpu:a100:2(S:0),gpu:a100_1g.10gb:7(S:1),shard:8").replace(
    "GresUsed=gpu:a100:0(IDX:N/A)", "GresUsed=gpu:a100:1(IDX:0),gpu:a100_1g.10gb:3(IDX:2,4-5),shard:0").replace(
    "State=IDLE", "State=MIXED").replace("Partitions=main", "Partitions=gpu,main")
NODE_DRAINED = NODE_IDLE.replace("NodeName=vm", "NodeName=gpu3").replace("State=IDLE", "State=IDLE+DRAIN").replace(
    "Reason=", "") + " Reason=bad fan [root@2026-11-20T10:00:00]"
NODE_CPU = NODE_IDLE.replace("NodeName=vm", "NodeName=cpu1").replace("Gres=gpu:a100:4", "Gres=(null)")


def test_key_value_records_keep_values_with_spaces():
    rec = parse_record(NODE_DRAINED)
    assert rec["OS"].startswith("Linux 6.18.44-fc-v669 #1 SMP")
    assert rec["Reason"] == "bad fan [root@2026-11-20T10:00:00]"
    assert rec["GresUsed"] == "gpu:a100:0(IDX:N/A)" and rec["NodeAddr"] == "127.0.0.1"
    assert split_top("gpu:a:2(IDX:0,2),gpu:b:1") == ["gpu:a:2(IDX:0,2)", "gpu:b:1"]


@pytest.mark.parametrize("text, want", [
    ("gpu:a100:4", [Gres("gpu", "a100", 4)]),
    ("gpu:4", [Gres("gpu", "", 4)]),
    ("gpu:a100:2(S:0),gpu:h100:2(S:1),shard:8,mps:100", [Gres("gpu", "a100", 2), Gres("gpu", "h100", 2)]),
    ("gpu:a100:2(IDX:0-1),gpu:h100:0(IDX:N/A)", [Gres("gpu", "a100", 2), Gres("gpu", "h100", 0)]),
    ("gpu:a100_1g.10gb:7", [Gres("gpu", "a100_1g.10gb", 7)]),
    ("(null)", []),
    ("", []),
])
def test_parse_gres(text, want):
    assert parse_gres(text) == want


@pytest.mark.parametrize("state, ok", [
    ("IDLE", True), ("MIXED", True), ("ALLOCATED", True), ("COMPLETING", True),
    ("IDLE+CLOUD+POWERED_DOWN", True),  # power saving: SLURM boots it for a job
    ("IDLE+DRAIN", False), ("MIXED+DRAIN", False), ("DOWN*", False), ("IDLE*", False), ("DOWN", False),
    ("ALLOCATED+MAINT", False), ("IDLE+RESERVED", False), ("UNKNOWN", False), ("FUTURE", False), ("", False),
])
def test_usable_node_states(state, ok):
    assert usable(state) is ok


@pytest.mark.parametrize("gres_type, mapping, want", [
    ("a100", {"a100": "A100-80GB"}, "A100-80GB"),
    ("a100", {}, "a100"),
    ("", {}, "GPU"),
    ("", {"": "A100-40GB"}, "A100-40GB"),
    ("a100_1g.10gb", {}, "a100:1g.10gb"),
    ("nvidia_a100_3g.40gb", {}, "nvidia_a100:3g.40gb"),
    ("a100_1g.10gb", {"a100_1g.10gb": "A100-80GB:1g.10gb"}, "A100-80GB:1g.10gb"),
])
def test_type_names(gres_type, mapping, want):
    assert type_name(gres_type, mapping, "GPU") == want


def test_inventory_counts_usable_nodes_of_the_partition_and_marks_busy_gpus():
    records = [parse_record(x) for x in (NODE_IDLE, NODE_MIXED, NODE_DRAINED, NODE_CPU)]
    inv = inventory_from_nodes(records, partitions={"main"},
                               gres_types={"a100": "A100-80GB", "a100_1g.10gb": "A100-80GB:1g.10gb"})
    assert inv.summary() == {"A100-80GB": 6, "A100-80GB:1g.10gb": 7}
    assert all(not d.addressable for d in inv.devices)
    assert {d.host for d in inv.devices} == {"vm", "gpu2"}  # gpu3 is drained, cpu1 has no GPUs
    assert "gpu3 (IDLE+DRAIN)" in inv.note
    busy = sorted(inv.external_busy)
    assert busy == ["slurm/gpu2/a100/0", "slurm/gpu2/a100_1g.10gb/0", "slurm/gpu2/a100_1g.10gb/1",
                    "slurm/gpu2/a100_1g.10gb/2"]
    mig = inv.of_type("A100-80GB:1g.10gb")[0]
    assert mig.weight == Fraction(1, 7) and mig.memory_mib == 10240 and mig.model == "a100_1g.10gb"
    assert inv.of_type("A100-80GB")[0].memory_mib == 80 * 1024
    only_gpu = inventory_from_nodes(records, partitions={"gpu"}, gres_types={"a100": "A100-80GB"})
    assert {d.host for d in only_gpu.devices} == {"gpu2"}
    assert inventory_from_nodes([parse_record(NODE_CPU)]).note.startswith("no usable SLURM node with GPUs")


def test_requests_that_no_node_can_hold_are_refused_with_what_nodes_have():
    inv = inventory_from_nodes([parse_record(NODE_IDLE), parse_record(NODE_MIXED)],
                               gres_types={"a100": "A100-80GB"})
    assert never_fits(inv, "A100-80GB", 4) is None  # vm has 4, though gpu2 has 2
    assert "the most on one node is 4" in never_fits(inv, "A100-80GB", 5)
    assert "no H100 GPUs" in never_fits(inv, "H100", 1)
    assert never_fits(inv, "", 0) is None


SETTINGS = SlurmSettings(partition="main", gpu_partition="gpu", account="lab", qos="normal",
                         time_limit="08:00:00", extra_options=("--constraint=ib",))


@pytest.mark.parametrize("req, want", [
    (JobRequest(SETTINGS, 2, "a100", 8, 32 * 2**30, name="jupyter-ann"),
     ["--job-name=jupyter-ann", "--partition=gpu", "--account=lab", "--qos=normal", "--time=08:00:00",
      "--gres=gpu:a100:2", "--cpus-per-task=8", "--mem=32768M", "--constraint=ib"]),
    (JobRequest(SETTINGS, 0, "", 2.5, None, name="jupyter-ann"),
     ["--job-name=jupyter-ann", "--partition=main", "--account=lab", "--qos=normal", "--time=08:00:00",
      "--cpus-per-task=3", "--constraint=ib"]),
    (JobRequest(SlurmSettings(time_limit=""), 1, "", name="j", comment="gpulab:ab12:ff", output="/h/a/x_%j.log",
                workdir="/h/a", export=("PATH", "JUPYTERHUB_API_TOKEN")),
     ["--job-name=j", "--output=/h/a/x_%j.log", "--chdir=/h/a", "--export=PATH,JUPYTERHUB_API_TOKEN",
      "--gres=gpu:1", "--comment=gpulab:ab12:ff"]),
])
def test_sbatch_options(req, want):
    assert sbatch_options(req) == want


@pytest.mark.parametrize("req", [
    JobRequest(SlurmSettings(partition="main\n#SBATCH --gres=gpu:8")),
    JobRequest(SlurmSettings(time_limit="8 hours")),
    JobRequest(SlurmSettings(), 1, "a100:8 --partition=x"),
    JobRequest(SlurmSettings(), 0, name="x;rm -rf"),
    JobRequest(SlurmSettings(), 0, name="j", export=("A=B",)),
    JobRequest(SlurmSettings(), 0, name="j", workdir="/home/a b"),
    JobRequest(SlurmSettings(extra_options=("--gres=gpu:8",))),
])
def test_sbatch_refuses_values_that_are_not_one_plain_word(req):
    with pytest.raises(SbatchError):
        sbatch_options(req)


@pytest.mark.parametrize("opt, ok", [
    ("--constraint=ib", True), ("--exclusive", True), ("--reservation=gpu-lab", True),
    ("--gres=gpu:8", False), ("--partition=x", False), ("--uid=0", False), ("--constraint=a b", False),
    ("-p x", False), ("--comment=x\n#SBATCH", False),
])
def test_admin_extra_options(opt, ok):
    if ok:
        check_extra_option(opt)
    else:
        with pytest.raises(SbatchError):
            check_extra_option(opt)


def test_script_runs_the_server_as_a_job_step_and_ignores_anything_else():
    script = render_script(["--job-name=j", "--gres=gpu:2"], ["/env/bin/batchspawner-singleuser",
                                                              "/env/bin/jupyterhub-singleuser", "--x=a b"],
                           "/env/bin", "module load cuda")
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash" and lines[1:3] == ["#SBATCH --job-name=j", "#SBATCH --gres=gpu:2"]
    assert [line for line in lines if line.startswith("#SBATCH")] == lines[1:3]
    assert "export PATH=/env/bin:\"$PATH\"" in lines and "module load cuda" in lines
    assert "srun /env/bin/batchspawner-singleuser /env/bin/jupyterhub-singleuser '--x=a b'" in lines


def test_job_names():
    assert job_name("ann", "") == "jupyter-ann"
    assert job_name("Ann.Smith@uni", "exp 1") == "jupyter-Ann.Smith-uni-exp-1"


NOW = dt.datetime(2026, 11, 22, 12, 0, 0)


@pytest.mark.parametrize("line, state, reason, start, nodes", [
    ("PENDING|Resources|2026-11-22T12:10:00|", "PENDING", "Resources", dt.datetime(2026, 11, 22, 12, 10), ""),
    ("PENDING|Priority|N/A|", "PENDING", "Priority", None, ""),
    ("RUNNING|None|2026-11-22T11:59:00|vm", "RUNNING", "None", dt.datetime(2026, 11, 22, 11, 59), "vm"),
    ("", "", "", None, ""),
])
def test_parse_squeue(line, state, reason, start, nodes):
    assert parse_squeue(line) == JobView(state, reason, start, nodes)


@pytest.mark.parametrize("state, pending, running, gone", [
    ("PENDING", True, False, False), ("CONFIGURING", True, False, False), ("REQUEUED", True, False, False),
    ("RUNNING", False, True, False), ("COMPLETING", False, True, False), ("SUSPENDED", False, False, False),
    ("", False, False, True), ("CANCELLED", False, False, True), ("PREEMPTED", False, False, True),
])
def test_job_states(state, pending, running, gone):
    v = JobView(state)
    assert (v.pending, v.running, v.gone) == (pending, running, gone)


@pytest.mark.parametrize("reason, fragment, hopeless", [
    ("Resources", "waiting for GPUs, CPUs or memory", False),
    ("Priority", "higher priority", False),
    ("QOSMaxGRESPerUser", "QOS limit on GPUs", False),
    ("JobHeldAdmin", "held by an administrator", True),
    ("InvalidAccount", "account is invalid", True),
    ("ReqNodeNotAvail, UnavailableNodes:gpu3", "unavailable", False),
    ("SomethingNew", "SLURM says: SomethingNew", False),
])
def test_pending_reasons(reason, fragment, hopeless):
    text, h = explain(reason)
    assert fragment in text and h is hopeless


@pytest.mark.parametrize("start, want", [
    (None, ""),
    (dt.datetime(2026, 11, 22, 12, 0, 30), "SLURM expects to start it within a minute"),
    (dt.datetime(2026, 11, 22, 12, 12), "estimated start 12:12 (in about 12 min)"),
    (dt.datetime(2026, 11, 22, 15, 0), "estimated start 15:00 (in about 3.0 h)"),
    (dt.datetime(2026, 11, 23, 9, 0), "estimated start Mon 23 Nov 09:00 (in about 21.0 h)"),
])
def test_estimated_start(start, want):
    assert when(start, NOW) == want


def test_pending_message_and_queue_position():
    assert queue_position("7", ["5", "7", "9"]) == (2, 3)
    assert queue_position("8", ["5"]) == (None, 1)
    view = JobView("PENDING", "Resources", dt.datetime(2026, 11, 22, 12, 10))
    assert pending_message("7", view, NOW, 2, 3) == (
        "Waiting in the SLURM queue (job 7): waiting for GPUs, CPUs or memory to be freed by other jobs "
        "[Resources]; position 2 of 3 waiting in partition; estimated start 12:10 (in about 10 min).")


def test_job_records_and_endings():
    rec = parse_job_record(parse_record(
        "JobId=12 JobName=jupyter-ann UserId=ann(1001) JobState=CANCELLED Reason=None ExitCode=0:15 "
        "StartTime=2026-11-22T11:00:00 EndTime=2026-11-22T11:30:00 Partition=main NodeList=vm "
        "JOB_GRES=gpu:a100:2   Nodes=vm CPU_IDs=0-1 Mem=4096 GRES=gpu:a100:2(IDX:0-1) MinCPUsNode=2"))
    assert (rec.state, rec.exit_code, rec.nodes, rec.gpu_ids, rec.reason) == ("CANCELLED", "0:15", "vm", "0-1", "")
    assert rec.as_state()["start"] == "2026-11-22T11:00:00"
    assert ended_message("12", rec, "/h/x.log", " before the server started") == (
        "SLURM job 12 was cancelled (exit code 0:15) before the server started. Its output is in /h/x.log")
    assert ended_message("12", None) == "SLURM job 12 is gone (SLURM no longer lists it)"
    pre = parse_job_record(parse_record("JobId=13 JobState=PREEMPTED ExitCode=0:0"))
    assert ended_message("13", pre) == "SLURM job 13 was preempted by a higher-priority job"


def test_orphans_are_this_hubs_live_jobs_without_an_allocation():
    tag = "ab12cd34"
    lines = [
        f"1|{job_comment(tag, 'held')}|RUNNING",
        f"2|{job_comment(tag, 'gone')}|PENDING",
        f"3|{job_comment('other', 'gone')}|RUNNING",  # another hub's job
        "4|(null)|RUNNING",  # not gpulab's
        f"5|{job_comment(tag, 'gone2')}|COMPLETING",
    ]
    assert orphans(lines, tag, {"held"}) == ["2", "5"]


def test_gres_type_to_request():
    from hub_plugins.gpu.simulated import parse_spec
    from hub_plugins.spawners.slurm.nodes import gres_type_for

    live = inventory_from_nodes([parse_record(NODE_MIXED)], gres_types={"a100": "A100-80GB"})
    assert gres_type_for("A100-80GB", live, {"a100": "A100-80GB"}, "GPU") == "a100"
    assert gres_type_for("a100:1g.10gb", live, {}, "GPU") == "a100_1g.10gb"  # as the node names it
    simulated = parse_spec("4xA100-80GB")  # gpus.inventory set: no node names, invert the mapping
    assert gres_type_for("A100-80GB", simulated, {"a100": "A100-80GB"}, "GPU") == "a100"
    assert gres_type_for("GPU", simulated, {}, "GPU") == ""
