#!/usr/bin/env bash
# Run an fgjax config on a Cloud TPU VM slice: create (or queue) the slice, install the project
# on every worker, start the same command on all workers with logs streamed back, rerun after a
# preemption (the run resumes from its last checkpoint), and delete the slice.
#
#   launch/tpu_vm.sh all --name=fg1 --zone=us-east5-a --type=v5p-64 \
#       --config=configs/llava15.py:stage=pretrain --workdir=gs://my-bucket/runs/pretrain [--spot] [--dry-run]
#
# Steps: create | install | run | delete | all (create, install, run until done, delete).
# The workdir must be on GCS (gs://...) so all workers and a re-created slice share it.
# Credentials are your gcloud login (`gcloud auth login`); nothing is stored in this repository.
set -euo pipefail

step="${1:-}"; shift || true
NAME="" ZONE="" TYPE="" CONFIG="" WORKDIR="" SPOT=0 DRY=0 QUEUED=0
RUNTIME="v2-alpha-tpuv5"
REPO_DIR="$(cd "$(dirname "$0")/.." && pwd)"
MAX_RETRIES=20
for arg in "$@"; do
  case "$arg" in
    --name=*) NAME="${arg#*=}" ;;
    --zone=*) ZONE="${arg#*=}" ;;
    --type=*) TYPE="${arg#*=}" ;;
    --runtime=*) RUNTIME="${arg#*=}" ;;
    --config=*) CONFIG="${arg#*=}" ;;
    --workdir=*) WORKDIR="${arg#*=}" ;;
    --max-retries=*) MAX_RETRIES="${arg#*=}" ;;
    --spot) SPOT=1 ;;
    --queued) QUEUED=1 ;;
    --dry-run) DRY=1 ;;
    *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done

usage() { sed -n '2,14p' "$0" >&2; exit 2; }
[[ "$step" =~ ^(create|install|run|delete|all)$ ]] || usage
[[ -n "$NAME" && -n "$ZONE" ]] || { echo "--name and --zone are required" >&2; exit 2; }

run() {  # print the command (shell-quoted, ready to paste); execute it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ $DRY -eq 0 ]]; then "$@"; fi
}

spot_flag() { [[ $SPOT -eq 1 ]] && echo "--spot" || true; }

create() {
  [[ -n "$TYPE" ]] || { echo "--type is required to create a slice" >&2; exit 2; }
  if [[ $QUEUED -eq 1 ]]; then
    run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" --zone="$ZONE" \
      --accelerator-type="$TYPE" --runtime-version="$RUNTIME" $(spot_flag)
  else
    run gcloud compute tpus tpu-vm create "$NAME" --zone="$ZONE" --accelerator-type="$TYPE" \
      --version="$RUNTIME" $(spot_flag)
  fi
}

install() {
  run gcloud compute tpus tpu-vm scp --recurse --zone="$ZONE" --worker=all \
    "$REPO_DIR/setup.cfg" "$REPO_DIR/pyproject.toml" "$REPO_DIR/README.md" "$REPO_DIR/fgjax" "$REPO_DIR/configs" "$NAME:~/fgjax/"
  run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all \
    --command="cd ~/fgjax && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"
}

train_once() {
  [[ -n "$CONFIG" && -n "$WORKDIR" ]] || { echo "--config and --workdir are required to run" >&2; exit 2; }
  # jax.distributed.initialize() finds the other workers by itself on a TPU VM slice.
  run gcloud compute tpus tpu-vm ssh "$NAME" --zone="$ZONE" --worker=all \
    --command="cd ~/fgjax && .venv/bin/python -m fgjax.main --config='$CONFIG' --workdir='$WORKDIR' 2>&1"
}

state() {
  gcloud compute tpus tpu-vm describe "$NAME" --zone="$ZONE" --format='value(state)' 2>/dev/null || echo MISSING
}

run_until_done() {
  for attempt in $(seq 1 "$MAX_RETRIES"); do
    echo "== attempt $attempt: rerunning the same command resumes from the last checkpoint"
    if train_once; then return 0; fi
    [[ $DRY -eq 1 ]] && return 0
    s="$(state)"
    if [[ "$s" == "PREEMPTED" || "$s" == "MISSING" || "$s" == "TERMINATED" ]]; then
      echo "slice is $s: re-creating it"
      run gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet || true
      create && install
    else
      echo "the run failed on a healthy slice (state $s); not retrying" >&2; return 1
    fi
  done
  echo "gave up after $MAX_RETRIES attempts" >&2; return 1
}

delete() {
  if [[ $QUEUED -eq 1 ]]; then
    run gcloud compute tpus queued-resources delete "$NAME" --zone="$ZONE" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" --zone="$ZONE" --quiet
  fi
}

case "$step" in
  create) create ;;
  install) install ;;
  run) run_until_done ;;
  delete) delete ;;
  all) create; install; status=0; run_until_done || status=$?; delete; exit $status ;;
esac
