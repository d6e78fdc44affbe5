"""Launch scripts: their dry runs print the documented commands, and the local launcher runs a
real 2-process JAX job."""

import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def dry_run(script: str, *args: str) -> str:
    out = subprocess.run(
        ["bash", str(ROOT / "launch" / script), *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_tpu_vm_dry_run_prints_the_whole_lifecycle():
    text = dry_run(
        "tpu_vm.sh", "all", "--name=fg1", "--zone=us-east5-a", "--type=v5p-64", "--spot", "--dry-run",
        "--config=configs/llava15.py:stage=pretrain", "--workdir=gs://bucket/runs/pretrain",
    )  # fmt: skip
    # each "+ ..." line is a shell-quoted command, ready to paste: parse it back into argv
    commands = [shlex.split(line[2:]) for line in text.splitlines() if line.startswith("+ ")]
    create, scp, install, train, delete = commands
    assert create == [
        "gcloud", "compute", "tpus", "tpu-vm", "create", "fg1", "--zone=us-east5-a", "--accelerator-type=v5p-64",
        "--version=v2-alpha-tpuv5", "--spot",
    ]  # fmt: skip
    assert scp[:7] == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "scp",
        "--recurse",
        "--zone=us-east5-a",
    ]
    assert scp[-1] == "fg1:~/fgjax/"
    assert (
        install[-1]
        == "--command=cd ~/fgjax && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"
    )
    assert "--worker=all" in install and "--worker=all" in train
    assert train[-1] == (
        "--command=cd ~/fgjax && .venv/bin/python -m fgjax.main --config='configs/llava15.py:stage=pretrain' "
        "--workdir='gs://bucket/runs/pretrain' 2>&1"
    )
    assert delete == [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "delete",
        "fg1",
        "--zone=us-east5-a",
        "--quiet",
    ]
    assert "resumes from the last checkpoint" in text


def test_tpu_vm_queued_resources_and_bad_arguments():
    text = dry_run(
        "tpu_vm.sh", "create", "--name=q1", "--zone=z", "--type=v5e-16", "--queued", "--dry-run"
    )
    assert (
        "+ gcloud compute tpus queued-resources create q1 --node-id=q1 --zone=z --accelerator-type=v5e-16"
        in text
    )
    out = subprocess.run(
        ["bash", str(ROOT / "launch" / "tpu_vm.sh"), "run", "--name=x", "--zone=z", "--dry-run"],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "--config and --workdir are required" in out.stderr


def test_slurm_dry_run_prints_the_batch_script():
    text = dry_run(
        "slurm.sh", "--nodes=4", "--gpus_per_node=8", "--partition=gpu", "--dry-run",
        "--config=configs/llava15.py:stage=finetune", "--workdir=/shared/runs/ft",
    )  # fmt: skip
    for line in (
        "#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8", "#SBATCH --requeue",
        "#SBATCH --partition=gpu",
        "srun --kill-on-bad-exit=1 .venv/bin/python -m fgjax.main --config='configs/llava15.py:stage=finetune' --workdir='/shared/runs/ft' &",
        "+ sbatch <the script above>",
    ):  # fmt: skip
        assert line in text.splitlines(), line


def test_local_dry_run_and_a_real_two_process_job(tmp_path):
    text = dry_run(
        "local.sh",
        "--num_processes=2",
        "--dry_run",
        "--",
        "python",
        "-m",
        "fgjax.main",
        "--config=c.py",
        "--workdir=w",
    )
    assert text.splitlines() == [
        f"FGJAX_COORDINATOR=127.0.0.1:<free port> FGJAX_NUM_PROCESSES=2 FGJAX_PROCESS_ID={i} PYTHONUNBUFFERED=1 "
        "python -m fgjax.main --config=c.py --workdir=w"
        for i in range(2)
    ]
    program = (
        "from fgjax import distributed; distributed.initialize(); import jax, jax.numpy as jnp; "
        "from jax.experimental import multihost_utils as mh; "
        "total = mh.process_allgather(jnp.asarray([jax.process_index() + 1])).sum(); "
        "print(f'process {jax.process_index()} of {jax.process_count()}, devices {jax.device_count()}, sum {total}')"
    )
    out = subprocess.run(
        ["bash", str(ROOT / "launch" / "local.sh"), "--num_processes=2", "--devices_per_process=2", "--timeout=120",
         "--", sys.executable, "-c", program],
        capture_output=True, text=True, timeout=180, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:]
    for i in range(2):
        assert f"[{i}] process {i} of 2, devices 4, sum 3" in out.stdout
