#!/usr/bin/env bash
# The demo model's GPU calls (docs/DEMO_MODEL.md), from the repository root on the lent machine (one process per
# GPU). Training runs in the background (its own process session), so it goes on between calls while the machine
# stays warm; each call returns the latest EMA weights (int8 shards of at most 15 MB) and state.tgz (the logs, the
# training and model configs, the shard index), so that a lost machine loses no more than one call's work.
#   bash benchmarks/gpu_demo_session.sh start STEPS TRAIN_MINUTES CALL_SECONDS [FLAG...]   # set up, render, train
#                                          (FLAGs go to `train`, e.g. --depth 20; INIT_MODEL=DIR starts from DIR
#                                           instead of .gpu/init_model)
#   bash benchmarks/gpu_demo_session.sh prepare          # only set up and render (then `start` skips both), for when
#                                                        # the bundle and the starting model do not fit one call
#   bash benchmarks/gpu_demo_session.sh wait CALL_SECONDS                        # let it train; return its state
#   bash benchmarks/gpu_demo_session.sh final                                    # wait for the end (at most
#                                                                                # 570 s); return its state
#   bash benchmarks/gpu_demo_session.sh eval                                     # held-out meshes, on the GPU
# CALL_SECONDS: when the call stops waiting and returns the state, at most 570 (calls are stopped at 600 s).
# Send each next call as soon as the last returns: the lending service releases a machine idle for 30 s, and the
# training running on it goes with it (stage 6 of the demo model lost the last 1,800 of its 6,800 steps so).
# Carried: .whl (wheels), .gl (EGL loaders), .gpu/bundle (the mesh bundle), .gpu/lpips_vgg16_int8.safetensors,
# .gpu/init_model (the model to start from, int8: `diffusiongs export-model ... --dtype int8 --weights raw`).
# A call carries at most 64 MiB: with the 39 MB depth-20 demo model as the start, `prepare` carries .whl .gl
# .gpu/bundle, then `INIT_MODEL=diffusiongs/assets/demo_model ... start` carries .gpu/lpips_vgg16_int8.safetensors.
set -euo pipefail
phase=$1
work=${DEMO_WORK:-/tmp/demo}  # the warm disk's copy of the data and the run (tests point it elsewhere)
# A call is stopped after 600 s, and what it wrote under $OUT then does not come back: returning the state (int8
# export, archive) takes 12-30 s, so a call stops waiting at most 570 s after it started.
max_call_seconds=570
source benchmarks/gpu_env.sh
start=$(date +%s)

report_state() {  # the latest EMA weights' shards, and one archive of the logs and the model's small files, into $OUT
    local files=("$work/train.log" "$work/run/metrics.jsonl" "$work/run/train_config.json")
    if [ -f "$work/run/checkpoints/latest" ]; then
        # A call returns at most 8 files and 64 MiB: int8 (the form the repo ships) keeps a depth-20 model at 39 MB.
        rm -rf "$work/export"
        # EXPORT="--dtype int4 --int4-group G" returns a run trained with `--int4-group G` as it will be stored.
        # shellcheck disable=SC2086  # EXPORT holds several words
        python3 -m diffusiongs.cli.main export-model "$work/run" --out "$work/export" --max-shard-mb 15 \
            ${EXPORT:---dtype int8}
        mkdir -p "$OUT/model"
        mv "$work/export"/*.safetensors "$OUT/model/"
        files+=("$work/export"/*)
    fi
    tar czf "$OUT/state.tgz" --ignore-failed-read --transform 's,.*/,,' "${files[@]}" 2>/dev/null || true
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader || true
}

prepare() {  # gsplat's extension and the rendered data, once per machine: a later call finds them on the warm disk
    if [ -f "$work/.prepared" ]; then return; fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    # gsplat's build (nvcc, ~55 s) and the rendering (EGL and the CPU workers, ~60 s) need nothing of each other.
    ( python3 -c "from gsplat.cuda._backend import _C" > "$work.gsplat.log" 2>&1  # builds gsplat's extension
      echo "gsplat ready after $(($(date +%s) - start)) s" >> "$work.gsplat.log" ) &
    local build=$!
    bash scripts/demo_model.sh data .gpu/bundle "$work" > "$work.data.log" 2>&1 || {
        pkill -P "$build" || true  # the build is of no use now: stop it (its python3) rather than let it run on
        tail -n 30 "$work.data.log"; exit 1; }
    tail -n 3 "$work.data.log"
    echo "data ready after $(($(date +%s) - start)) s"
    wait "$build" || { tail -n 30 "$work.gsplat.log"; exit 1; }
    tail -n 1 "$work.gsplat.log"
    touch "$work/.prepared"
}

check_call_seconds() {  # before anything starts: a call that waits too long returns nothing
    if ! [[ "$1" =~ ^[0-9]+$ ]]; then
        echo "gpu_demo_session.sh: CALL_SECONDS '$1' is not a whole number of seconds" >&2
        exit 2
    fi
    if [ "$1" -gt "$max_call_seconds" ]; then
        echo "gpu_demo_session.sh: CALL_SECONDS $1 leaves no time to return the state; at most $max_call_seconds" >&2
        exit 2
    fi
}

wait_until() {  # sleep until $1 seconds after the call started, or until training has ended
    while [ $(($(date +%s) - start)) -lt "$1" ] && pgrep -f "diffusiongs.cli.main train" > /dev/null; do sleep 10; done
}

case $phase in
prepare)
    prepare ;;
start)
    steps=$2
    minutes=$3
    seconds=$4
    extra=("${@:5}")
    check_call_seconds "$seconds"
    prepare
    setsid nohup bash scripts/demo_model.sh train "$work" "${INIT_MODEL:-.gpu/init_model}" "$steps" "$minutes" \
        "${extra[@]}" > "$work/train.log" 2>&1 &
    sleep 120
    nvidia-smi dmon -c 5 -s u || true
    wait_until "$seconds"
    report_state ;;
wait)
    check_call_seconds "$2"
    wait_until "$2"
    report_state ;;
final)
    wait_until "$max_call_seconds"  # returns when training ends; a run that outlasts the call still returns its state
    report_state ;;
eval)
    bash scripts/demo_model.sh eval "$work" "$work/reports" > "$work/eval.log" 2>&1 || tail -n 30 "$work/eval.log"
    tail -n 2 "$work/eval.log"
    tar czf "$OUT/reports.tgz" -C "$work" reports eval.log ;;
*)
    echo "gpu_demo_session.sh: unknown phase '$phase'" >&2; exit 2 ;;
esac
echo "call done after $(($(date +%s) - start)) s"
tail -n 4 "$work/train.log" 2>/dev/null || true
