#!/usr/bin/env bash
# The ablation table (paper Table 2 at small scale) and the sampler sweep of docs/RESULTS.md on a lent GPU machine,
# from the repository root. The ablation runs in the background (its own process session), so it goes on between
# calls while the machine stays warm; it trains seed by seed (every row's seed 0 first) over all the machine's GPUs,
# and whatever a session finishes is reported: later sessions add seeds, and `benchmarks/ablations.py --merge`
# joins their tables (SEEDS="1 2" picks the seeds a session trains; the default is 0 1 2).
#   bash benchmarks/gpu_ablations.sh start CALL_SECONDS   # set up, make the data, start the runs, then as `wait`
#   bash benchmarks/gpu_ablations.sh wait CALL_SECONDS    # let them train until CALL_SECONDS; print their progress
#   bash benchmarks/gpu_ablations.sh drain CALL_SECONDS   # start no new run; let the running ones finish
#   bash benchmarks/gpu_ablations.sh final                # stop; score the finished runs; return the table
#   bash benchmarks/gpu_ablations.sh sweep                # the demo model's sampler sweep
# Carried: .whl (wheels), .gl (EGL loaders), .gpu/lpips_vgg16_int8.safetensors (not for the sweep, which carries
# the demo model instead: the working tree that travels is limited to 64 MiB).
set -euo pipefail
phase=$1
work=/tmp/abl
source benchmarks/gpu_env.sh
start=$(date +%s)
gpus=$(nvidia-smi --list-gpus | wc -l)
# Every flag but --parallel, --report-only and --data-workers is part of the table's identity (see --merge).
settings=(--out "$work" --preset small --resolution 128 --objects 400 --scenes 100 --mixed --steps 5000
          --batch-size 8 --seeds ${SEEDS:-0 1 2} --eval-limit 32 --ckpt-every 500)
parallel=$((gpus > 1 ? 7 * gpus / 2 : 3))  # 3-4 runs per GPU: one small run leaves most of an H200 idle
ablation="python3 benchmarks/abl[a]tions.py"  # a pattern that matches the runs, not this script's own command

progress() {  # each run's latest logged step, and the GPUs' load
    for log in "$work"/runs/*/seed*/metrics.jsonl; do
        [ -f "$log" ] && echo "$log: $(tail -n 1 "$log" | cut -c 1-100)"
    done
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used --format=csv,noheader || true
}

wait_until() {  # sleep until $1 seconds after the call started, or until the ablation has ended
    while [ $(($(date +%s) - start)) -lt "$1" ] && pgrep -f "$ablation" > /dev/null; do sleep 10; done
}

case $phase in
start)
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "from gsplat.cuda._backend import _C"  # builds gsplat's extension once per machine
    echo "gsplat ready after $(($(date +%s) - start)) s"
    mkdir -p "$work"
    rm -f "$work/STOP"
    setsid nohup python3 benchmarks/ablations.py "${settings[@]}" --num-workers 3 --data-workers "$(nproc)" \
        --parallel "$parallel" > "$work/ablation.log" 2>&1 &
    wait_until "$2"
    progress ;;
wait)
    wait_until "$2"
    progress ;;
drain)
    touch "$work/STOP"  # ablations.py starts no run after this; the running ones finish and are scored
    wait_until "$2"
    progress ;;
final)
    pkill -f "$ablation" || true
    pkill -f "diffusiongs.cli.mai[n] (train|evaluate)" || true
    while pgrep -f "diffusiongs.cli.mai[n] (train|evaluate)" > /dev/null; do sleep 2; done
    progress
    python3 benchmarks/ablations.py "${settings[@]}" --parallel "$((gpus * 4))" --report-only \
        > "$work/report.log" 2>&1 || true
    tail -n 3 "$work/report.log"
    cat "$work/ablations.md" 2>/dev/null || true
    (cd "$work" && tar czf "$OUT/ablation_results.tgz" ablations.md ablations.json ablation.log report.log logs \
        runs/*/seed*/metrics.jsonl eval) || true ;;
sweep)
    # The demo model on 50 held-out objects (the seed no training set used), as in docs/DEMO_MODEL.md.
    python3 -m diffusiongs.cli.main data synth --out /tmp/eval --seed 12345 --objects 50 --res 128 \
        --test-fraction 1 --val-fraction 0 --workers "$(nproc)" --no-progress
    python3 benchmarks/solver_sweep.py --checkpoint diffusiongs/assets/demo_model --data /tmp/eval \
        --out "$OUT/sweep" --limit 50 --compile --no-progress ;;
*)
    echo "gpu_ablations.sh: unknown phase '$phase' (start, wait, drain, final or sweep)" >&2; exit 2 ;;
esac
echo "call done after $(($(date +%s) - start)) s"
