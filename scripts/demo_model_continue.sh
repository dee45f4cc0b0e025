#!/usr/bin/env bash
# Second stage of the demo model (docs/DEMO_MODEL.md): start from its weights (the EMA of stage 1) with a fresh
# AdamW and a short schedule that decays the learning rate, on the same procedural objects. Resumable like stage 1.
#   scripts/demo_model_continue.sh INIT_MODEL DATA_DIR RUN_DIR [MAX_MINUTES]
set -euo pipefail
init=$1
data=$2
run=$3
minutes=${4:-}
workers=$(nproc)
diffusiongs data synth --out "$data" --objects 1000 --views 32 --res 128 --seed 0 --workers "$workers" --no-progress
# No L_pd warm-up: the Gaussians are already placed, and the warm-up would pull them back to the prior.
diffusiongs train --preset small --data "$data" --out "$run" --init-from "$init" --steps 2000 --batch-size 32 \
    --num-novel 3 --selection.mode orbit --optim.lr 1.5e-4 --optim.warmup-steps 100 --optim.ema-decay 0.999 \
    --step.loss.point-warmup-steps 0 --seed 1 --num-workers $((workers > 12 ? 12 : workers)) --log-every 50 \
    --ckpt-every 1000 --image-every 0 --compile --no-progress ${minutes:+--max-minutes "$minutes"}
