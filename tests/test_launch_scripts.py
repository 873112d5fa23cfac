"""scripts/: the commands the launch scripts build (DRY_RUN=1 prints them), single node, multi-node, SLURM."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_VARS = ("GPUS", "GPUS_PER_NODE", "NNODES", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "PORT",
                 "RDZV_ENDPOINT", "LAUNCHER")


def dry_run(script: str, *args: str, **env: str) -> list[list[str]]:
    """The commands `script` would run, each split into its arguments."""
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith("SLURM_")}
    result = subprocess.run(["bash", str(ROOT / "scripts" / script), *args], env={**base, "DRY_RUN": "1", **env},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def value_after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_train_test_ytvos_single_node() -> None:
    train, test = dry_run("dist_train_test_ytvos.sh", "out/r50", "pre.pth", "--backbone", "resnet101",
                          GPUS_PER_NODE="4", MASTER_PORT="29611")
    assert train[:3] == ["python3", "-m", "torch.distributed.run"]
    assert value_after(train, "--nproc_per_node") == "4" and value_after(train, "--nnodes") == "1"
    assert value_after(train, "--master_port") == "29611"
    script = train.index("main.py")
    assert value_after(train[script:], "--pretrained_weights") == "pre.pth"
    assert value_after(train[script:], "--resume") == "auto" and train[-2:] == ["--backbone", "resnet101"]
    assert train[script:].count("--lr_drop") == 1 and value_after(train, "--lr_drop") == "3"
    assert test[:3] == ["env", "GPUS=4", "YTVOS_PATH=data/ref-youtube-vos"]
    assert test[4:] == ["scripts/dist_test_ytvos.sh", "out/r50", "out/r50/checkpoint.pth", "--backbone", "resnet101"]


def test_multi_node_rank_one_trains_but_does_not_run_inference() -> None:
    commands = dry_run("dist_train_test_ytvos.sh", "out", "pre.pth", GPUS_PER_NODE="8", NNODES="2", NODE_RANK="1",
                       MASTER_ADDR="10.1.2.3")
    assert len(commands) == 1
    train = commands[0]
    assert value_after(train, "--nnodes") == "2" and value_after(train, "--node_rank") == "1"
    assert value_after(train, "--master_addr") == "10.1.2.3"


def test_pretrain_is_one_command_with_all_its_flags() -> None:
    """Upstream's script split the command at a commented line continuation (spec 11.1 #15)."""
    (cmd,) = dry_run("dist_pretrain.sh", "out/pre", GPUS="2")
    tail = cmd[cmd.index("main.py"):]
    assert value_after(tail, "--dataset_file") == "all" and value_after(tail, "--num_frames") == "1"
    assert value_after(tail, "--batch_size") == "2" and tail[tail.index("--lr_drop") + 1:][:2] == ["8", "10"]
    assert "--freeze_text_encoder" not in tail and value_after(cmd, "--nproc_per_node") == "2"


def test_a2d_and_the_legacy_launcher() -> None:
    (cmd,) = dry_run("dist_train_a2d.sh", "out/a2d", "pre.pth", LAUNCHER="legacy", GPUS_PER_NODE="1")
    assert cmd[:4] == ["python3", "-m", "torch.distributed.launch", "--use_env"]
    tail = cmd[cmd.index("main.py"):]
    assert value_after(tail, "--dataset_file") == "a2d" and value_after(tail, "--batch_size") == "2"


def fake_scontrol_path(tmp_path: Path) -> str:
    """PATH with an `scontrol` that expands the node list gpu[07-08] (no SLURM on the test machine)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text("#!/bin/sh\nprintf 'gpu07\\ngpu08\\n'\n")
    scontrol.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}"


def test_slurm_runs_one_torchrun_per_node_with_c10d_rendezvous(tmp_path: Path) -> None:
    slurm = {"PATH": fake_scontrol_path(tmp_path), "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu[07-08]",
             "SLURM_NNODES": "2", "SLURM_GPUS_ON_NODE": "8", "SLURM_SUBMIT_DIR": str(ROOT)}
    job_dir = str(tmp_path / "job")  # slurm_train.sh creates OUTPUT_DIR even in a dry run
    (srun,) = dry_run("slurm_train.sh", job_dir, "--dataset_file", "ytvos", **slurm)
    assert srun[:5] == ["srun", "--ntasks-per-node", "1", "--kill-on-bad-exit", "1"]
    assert srun[5:8] == ["bash", "scripts/_launch.sh", "main.py"] and value_after(srun, "--resume") == "auto"

    # what each node's task then runs (node 1 shown); srun exports the variables slurm_train.sh set
    node = {**slurm, "SLURM_NODEID": "1", "GPUS_PER_NODE": "8", "RDZV_ENDPOINT": "gpu07:29500"}
    (torchrun,) = dry_run("_launch.sh", "main.py", "--output_dir", job_dir, **node)
    assert value_after(torchrun, "--nnodes") == "2" and value_after(torchrun, "--nproc_per_node") == "8"
    assert value_after(torchrun, "--rdzv_backend") == "c10d"
    assert value_after(torchrun, "--rdzv_endpoint") == "gpu07:29500"
    assert value_after(torchrun, "--rdzv_id") == "4242" and "--node_rank" not in torchrun


def test_slurm_master_addr_is_the_first_host(tmp_path: Path) -> None:
    env = {"PATH": fake_scontrol_path(tmp_path), "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_NNODES": "2",
           "SLURM_NODEID": "0", "GPUS_PER_NODE": "2"}
    (cmd,) = dry_run("_launch.sh", "main.py", **env)
    assert value_after(cmd, "--master_addr") == "gpu07" and value_after(cmd, "--node_rank") == "0"


@pytest.mark.parametrize("script", ["dist_train_test_ytvos.sh", "dist_train_a2d.sh", "dist_pretrain.sh",
                                    "slurm_train.sh", "_launch.sh"])
def test_missing_arguments_print_usage(script: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    result = subprocess.run(["bash", str(ROOT / "scripts" / script)], env={**env, "SLURM_JOB_ID": "1"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage:" in result.stderr
