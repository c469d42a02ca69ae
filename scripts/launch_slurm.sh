#!/bin/bash
# Multi-node DDP training under SLURM, with Lightning's automatic requeue before the time limit.
#
#   sbatch scripts/launch_slurm.sh                                     # submit from the repository root
#   sbatch --nodes=4 --ntasks-per-node=4 --gpus-per-node=4 --export=ALL,CONFIG=configs/rdnet.yaml \
#       scripts/launch_slurm.sh trainer.max_epochs=100                 # key=value arguments are appended last
#
# Pitfalls:
# - --ntasks-per-node must equal --gpus-per-node: SLURM starts one task per GPU and each task is one DDP rank.
#   trainer.devices and trainer.num_nodes are taken from SLURM below so that they cannot disagree (a mismatch
#   hangs at "Initializing distributed: GLOBAL_RANK: ..., MEMBER: 1/N" with older Lightning; 2.x stops with
#   "does not match"). Starting python without `srun` still hangs there: Lightning then launches its own processes
#   on the first node only and waits for the others.
# - The run directory is named from SLURM_JOB_ID (runs/<method>/job<id>/). A requeued job keeps its id, so it
#   resumes into the same directory (resume=auto loads checkpoints/last.ckpt) and the same W&B run (the id kept in
#   meta.yaml). run.name is set explicitly because the platform's default name also carries a hash of the resolved
#   config: edit the YAML while the job waits in the queue and the requeued job would start over in a new directory.
# - SIGUSR1 90 s before the time limit goes to the srun tasks (no "B:" prefix): Lightning saves a checkpoint and
#   calls `scontrol requeue`, which needs --requeue. A job named "bash" or "interactive" turns this off.
#
#SBATCH --job-name=tenfold
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail

# sbatch runs a copy of this script from its spool directory: work from where the job was submitted.
cd "${SLURM_SUBMIT_DIR:-.}"

CONFIG=${CONFIG:-configs/rdnet.yaml}
PYTHON=${PYTHON:-python}
# One data-loading worker per CPU of the task, less the one the training process itself uses.
NUM_WORKERS=${NUM_WORKERS:-$(( ${SLURM_CPUS_PER_TASK:-1} > 1 ? ${SLURM_CPUS_PER_TASK:-1} - 1 : 0 ))}

# Slurm >= 22.05 no longer passes --cpus-per-task on to srun: without it every rank gets one CPU for itself
# and all of its loader workers.
srun --cpus-per-task="${SLURM_CPUS_PER_TASK:-1}" "$PYTHON" train.py --config "$CONFIG" \
    trainer.devices="$SLURM_NTASKS_PER_NODE" \
    trainer.num_nodes="$SLURM_NNODES" \
    trainer.strategy=ddp \
    data.num_workers="$NUM_WORKERS" \
    run.name="${RUN_NAME:-job$SLURM_JOB_ID}" \
    resume=auto \
    "$@"
