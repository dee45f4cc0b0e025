#!/usr/bin/env bash
# Recipe of the demo model shipped in diffusiongs/assets/demo_model (docs/DEMO_MODEL.md): the `small` preset at
# 128 px, trained on real meshes (a bundle made by `diffusiongs data bundle` from Debian's sweethome3d-furniture)
# mixed with procedural objects and procedural scenes, in the orbit view layout. It was trained in stages, each
# starting from the model the previous one made (the first from the procedural-only demo model) with the same
# command; STEPS and the machine's GPU count differ (docs/DEMO_MODEL.md). Every phase resumes: rerun it to continue.
#   scripts/demo_model.sh data  BUNDLE WORK                      # render the bundle and the procedural items
#   scripts/demo_model.sh train WORK INIT STEPS [MAX_MINUTES [FLAG...]]   # train (or resume) WORK/run from INIT;
#                                                                          # FLAGs go to `train` (e.g. --depth 20)
#   scripts/demo_model.sh eval  WORK REPORTS                     # held-out real objects: model and copy-condition
set -euo pipefail
phase=$1
workers=$(nproc)
case $phase in
data)
    bundle=$2
    work=$3
    # Real meshes: 32 training views (4 rings of 8 azimuths) + the 16-view evaluation orbit; the bundle's held-out
    # meshes (10 % of each source) become the test split.
    diffusiongs data render --bundle "$bundle" --out "$work/real" --res 128 --workers "$workers" --no-progress
    diffusiongs data synth --out "$work/procedural" --objects 600 --scenes 300 --res 128 --seed 0 \
        --workers "$workers" --no-progress ;;
train)
    work=$2
    init=$3
    steps=$4
    minutes=${5:-}
    extra=("${@:6}")
    # One process per GPU (DDP); the batch is per process, so the global batch is 32 x GPUs.
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    launch=(diffusiongs)
    if [ "$gpus" -gt 1 ]; then launch=(torchrun --standalone --nproc_per_node="$gpus" -m diffusiongs.cli.main); fi
    workers=$((workers / (gpus > 1 ? gpus : 1)))
    # No L_pd warm-up: the initial model already places its Gaussians, and the warm-up would pull them back.
    "${launch[@]}" train --preset small --data "$work/real" "$work/procedural" --scene-data "$work/procedural" \
        --scene-weight 0.15 --out "$work/run" --init-from "$init" --steps "$steps" --batch-size 32 --num-novel 3 \
        --layout.mode orbit --optim.lr 2e-4 --optim.warmup-steps 200 --step.loss.point-warmup-steps 0 --seed 0 \
        --num-workers $((workers > 12 ? 12 : workers)) --log-every 50 --ckpt-every 500 --keep-last 2 \
        --image-every 0 --compile --no-progress ${minutes:+--max-minutes "$minutes"} "${extra[@]}" ;;
eval)
    work=$2
    reports=$3
    diffusiongs evaluate --checkpoint "$work/run" --data "$work/real" --split test --out "$reports/model" \
        --no-progress
    diffusiongs evaluate --baseline copy-condition --checkpoint "$work/run" --data "$work/real" --split test \
        --out "$reports/copy" --no-progress ;;
*)
    echo "demo_model.sh: unknown phase '$phase' (data, train or eval)" >&2; exit 2 ;;
esac
