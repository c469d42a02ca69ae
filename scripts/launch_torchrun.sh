#!/usr/bin/env bash
# Multi-node DDP training with torchrun (c10d rendezvous). Run the same command on every node:
#
#   NNODES=2 GPUS=8 MASTER_ADDR=node0.cluster MASTER_PORT=29500 JOB_ID=rdnet-in1k-01 \
#   CONFIG=configs/rdnet.yaml bash scripts/launch_torchrun.sh [key=value ...]
#
# GPUS is the number of processes per node and becomes trainer.devices; NNODES becomes trainer.num_nodes,
# so torchrun and Lightning always agree on the world size. JOB_ID is torchrun's --rdzv-id (which the platform
# sees as TORCHELASTIC_RUN_ID) and, unless RUN_NAME is set, the run name: every rank on every node writes to
# runs/<method>/<RUN_NAME>/, and relaunching the same command (or a torchrun restart, MAX_RESTARTS > 0)
# continues from its checkpoints/last.ckpt because of resume=auto.
#
# Extra key=value arguments are appended last and win, e.g. a single-node CPU smoke test:
#   NNODES=1 GPUS=2 CONFIG=configs/demo/rdnet.yaml bash scripts/launch_torchrun.sh \
#       trainer.accelerator=cpu trainer.max_steps=3 logger=none
set -euo pipefail

cd "$(dirname "$0")/.."

CONFIG=${CONFIG:-configs/rdnet.yaml}
NNODES=${NNODES:-1}
GPUS=${GPUS:-$( (nvidia-smi --list-gpus 2>/dev/null || true) | wc -l)}
TORCHRUN=${TORCHRUN:-torchrun}
MAX_RESTARTS=${MAX_RESTARTS:-0}

if [[ "$GPUS" -lt 1 ]]; then
    echo "error: no GPU found: set GPUS=<processes per node>" >&2
    exit 2
fi
if [[ "$NNODES" -gt 1 ]]; then
    # Each node must name the same rendezvous host and id; defaults would differ from node to node.
    : "${MASTER_ADDR:?set MASTER_ADDR to the host name of the first node (the same on every node)}"
    : "${JOB_ID:?set JOB_ID to one id shared by all nodes (it names the rendezvous and the run directory)}"
fi
MASTER_ADDR=${MASTER_ADDR:-localhost}
MASTER_PORT=${MASTER_PORT:-29500}
JOB_ID=${JOB_ID:-local-$(date +%Y%m%d-%H%M%S)}
RUN_NAME=${RUN_NAME:-$JOB_ID}

exec "$TORCHRUN" \
    --nnodes="$NNODES" \
    --nproc_per_node="$GPUS" \
    --rdzv-backend=c10d \
    --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" \
    --rdzv-id="$JOB_ID" \
    --max-restarts="$MAX_RESTARTS" \
    train.py --config "$CONFIG" \
    trainer.strategy=ddp \
    trainer.devices="$GPUS" \
    trainer.num_nodes="$NNODES" \
    run.name="$RUN_NAME" \
    resume=auto \
    "$@"
