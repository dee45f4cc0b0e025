#!/usr/bin/env bash
# Recipe of the demo model shipped in diffusiongs/assets/demo_model (docs/DEMO_MODEL.md): the `small` preset
# trained at 128 px on procedural objects. Every stage resumes: rerun the script to continue an interrupted run.
#   scripts/demo_model.sh DATA_DIR RUN_DIR [MAX_MINUTES]
set -euo pipefail
data=${1:-data/demo_objects}
run=${2:-runs/demo}
minutes=${3:-}
workers=$(nproc)
diffusiongs data synth --out "$data" --objects 1000 --views 32 --res 128 --seed 0 --workers "$workers" --no-progress
diffusiongs train --preset small --data "$data" --out "$run" --steps 10000 --batch-size 32 --num-novel 3 \
    --selection.mode orbit --optim.lr 3e-4 --optim.warmup-steps 500 --optim.ema-decay 0.999 --seed 0 \
    --num-workers $((workers > 12 ? 12 : workers)) --log-every 50 --ckpt-every 1000 --image-every 0 \
    --compile --no-progress ${minutes:+--max-minutes "$minutes"}
