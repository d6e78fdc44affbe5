#!/usr/bin/env bash
# Submit an fgjax config to a SLURM GPU cluster: one task per node, all GPUs of a node per task;
# jax.distributed.initialize() reads SLURM's variables on every node. The job requeues on
# preemption and the rerun resumes from the last checkpoint.
#
#   launch/slurm.sh --nodes=4 --gpus_per_node=8 --config=configs/llava15.py:stage=pretrain \
#       --workdir=/shared/runs/pretrain [--partition=gpu] [--time=48:00:00] [--account=...] [--dry-run]
#
# --dry-run prints the batch script and the sbatch command instead of submitting.
set -euo pipefail
NODES=1 GPUS=8 CONFIG="" WORKDIR="" PARTITION="" TIME="24:00:00" ACCOUNT="" DRY=0
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
for arg in "$@"; do
  case "$arg" in
    --nodes=*) NODES="${arg#*=}" ;;
    --gpus_per_node=*) GPUS="${arg#*=}" ;;
    --config=*) CONFIG="${arg#*=}" ;;
    --workdir=*) WORKDIR="${arg#*=}" ;;
    --partition=*) PARTITION="${arg#*=}" ;;
    --time=*) TIME="${arg#*=}" ;;
    --account=*) ACCOUNT="${arg#*=}" ;;
    --dry-run) DRY=1 ;;
    *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done
[[ -n "$CONFIG" && -n "$WORKDIR" ]] || { echo "--config and --workdir are required" >&2; exit 2; }

script="$(cat <<SBATCH
#!/usr/bin/env bash
#SBATCH --job-name=fgjax
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS
#SBATCH --time=$TIME
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --output=$WORKDIR/slurm-%j.out
${PARTITION:+#SBATCH --partition=$PARTITION}
${ACCOUNT:+#SBATCH --account=$ACCOUNT}
set -euo pipefail
# a preempted or timed-out job is requeued; SLURM then sends SIGTERM, on which every task saves
# the step it reached (fgjax/train/preemption.py), and the rerun resumes from that checkpoint
trap 'scontrol requeue \$SLURM_JOB_ID' USR1
cd $REPO_DIR
srun --kill-on-bad-exit=1 .venv/bin/python -m fgjax.main --config='$CONFIG' --workdir='$WORKDIR' &
wait
SBATCH
)"

script="$(echo "$script" | sed '/^$/d')"
if [[ $DRY -eq 1 ]]; then
  echo "$script"
  echo "+ sbatch <the script above>"
else
  mkdir -p "$WORKDIR"
  echo "$script" | sbatch
fi
