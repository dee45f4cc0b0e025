#!/usr/bin/env bash
# The ablation table and the sampler sweep of docs/RESULTS.md on one lent GPU, from the repository root:
#   bash benchmarks/gpu_ablations.sh sweep         # the demo model's sampler sweep (LPIPS weights not needed)
#   bash benchmarks/gpu_ablations.sh probe STEPS   # dataset, copy-condition row, step-time probe
#   bash benchmarks/gpu_ablations.sh table STEPS   # every ablation row, side by side on the one GPU
# STEPS is the per-row budget: the probe times 6 trainings side by side (the table's load) so that STEPS can be
# chosen to fit a 10-minute call. Outputs go to $OUT (the device tool returns at most 8 files). The working tree
# that travels to the GPU is limited to 64 MiB: the demo model (sweep) and the LPIPS weights in .gpu (probe, table)
# travel in different calls.
set -euo pipefail
phase=$1
steps=${2:-0}
case $phase in
    sweep | probe | table) ;;
    *) echo "gpu_ablations.sh: unknown phase '$phase' (sweep, probe or table)" >&2; exit 2 ;;
esac
source benchmarks/gpu_env.sh
work=/tmp/abl
flags=(--out "$work" --preset small --resolution 64 --objects 400 --mixed --scenes 100 --batch-size 16
       --num-workers 2 --data-workers 16 --eval-limit 40 --steps "$steps")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
start=$(date +%s)
python3 -c "from gsplat.cuda._backend import _C" # builds gsplat's extension once per machine
echo "gsplat ready after $(($(date +%s) - start)) s"

if [ "$phase" = probe ]; then
    # The dataset (kept while the machine stays warm) and the row that needs no training.
    python3 benchmarks/ablations.py "${flags[@]}" --variants copy-condition
    # Six short trainings side by side, as in the table call; their wall time gives the step rate.
    probe_start=$(date +%s)
    for i in 1 2 3 4 5 6; do
        python3 -m diffusiongs.cli.main train --out /tmp/probe/$i --preset small --steps 150 --batch-size 16 \
            --num-workers 2 --data "$work/data" --scene-data "$work/data" --resolution 64 --log-every 50 \
            --ckpt-every 150 --image-every 0 --no-progress --step.loss.point-warmup-steps 0 \
            > /tmp/probe_$i.log 2>&1 &
    done
    wait
    echo "probe: 6 x 150 steps side by side in $(($(date +%s) - probe_start)) s (process start-up included)"
    tail -n 3 /tmp/probe_1.log
    mkdir -p "$OUT/probe" && cp "$work/ablations.md" "$work/ablations.json" "$OUT/probe/"
elif [ "$phase" = sweep ]; then
    # The demo model on 50 held-out objects (the seed no training set used), as in docs/DEMO_MODEL.md.
    python3 -m diffusiongs.cli.main data synth --out /tmp/eval --seed 12345 --objects 50 --res 128 \
        --test-fraction 1 --val-fraction 0 --workers 16 --no-progress
    python3 benchmarks/solver_sweep.py --checkpoint diffusiongs/assets/demo_model --data /tmp/eval \
        --out "$OUT/sweep" --limit 50 --compile --no-progress
else  # table
    python3 benchmarks/ablations.py "${flags[@]}" --parallel 6
    mkdir -p "$OUT/table" && cp "$work/ablations.md" "$work/ablations.json" "$OUT/table/"
    tar czf "$OUT/table/ablation_reports.tgz" -C "$work" eval logs
fi
echo "call done after $(($(date +%s) - start)) s"
