"""The paper's Table 2 ablation at small scale: every step trained with the same budget and seed, then evaluated on
the same held-out objects with the protocol of docs/RESULTS.md.

Rows (cumulative, as in the paper): the deterministic "w/o timestep" baseline (Plücker rays, no L_pd) -> + diffusion
-> + L_pd (point-distribution warm-up) -> [+ mixed object/scene training, with --mixed] -> + RPPC (the full model);
then the full model under the other view layouts (the paper's angle constraints, random views; every row is
evaluated on the layout it was trained with, which `evaluate` reads from the model), and the copy-condition
baseline, which needs no training. Every trained row is repeated for each of ``--seeds``; the table gives the mean
and a 95 % confidence interval over seeds (Student's t), so that a difference can be told from seed noise.

    python benchmarks/ablations.py --out runs/ablations --preset small --resolution 64 --steps 2000 --seeds 0 1 2
    python benchmarks/ablations.py --out /tmp/abl --preset tiny --resolution 32 --objects 6 --steps 2 ...  # smoke

Steps: (a) unless --data is given, make a dataset with `diffusiongs data synth` (objects, plus scenes with
--mixed); (b) `diffusiongs train` every variant; (c) `diffusiongs evaluate` each on the test split; (d) write
OUT/ablations.md and OUT/ablations.json with the table, the exact commands, the machine and the date.
Re-running resumes: the dataset and finished trainings are kept, evaluations newer than their checkpoint are reused.

The budget is ``--steps`` (the same for every row, and the length of each LR schedule); ``--budget-minutes`` only
caps a row's training time, and the table reports the steps each row reached. Rows can be split over several
invocations (``--variants``, e.g. one per GPU call, with otherwise identical flags) and combined with
``--merge A/ablations.json B/ablations.json``: `data synth` makes the same dataset on every machine. When time
runs out with later seeds unfinished, `touch OUT/STOP` lets the running runs finish and starts no more, and
``--report-only`` writes the table from the runs that reached ``--steps`` (benchmarks/gpu_ablations.sh does both).
"""

from __future__ import annotations

import csv
import json
import math
import os
import queue
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from diffusiongs.configio import config_from_dict, config_to_dict  # noqa: E402
from diffusiongs.data.store import atomic_write_bytes, read_manifest  # noqa: E402
from diffusiongs.diffusion.samplers import SamplerName  # noqa: E402
from diffusiongs.errors import InputError, exit_with  # noqa: E402
from diffusiongs.evaluation.report import (  # noqa: E402
    ITEMS_CSV,
    NA,
    SUMMARY_JSON,
    format_value,
    machine_info,
    markdown_table,
    utc_now,
    write_json,
)
from diffusiongs.system.presets import preset  # noqa: E402
from diffusiongs.training.checkpoint import TRAINER_STATE, latest_checkpoint  # noqa: E402

COPY_BASELINE = "copy-condition"
TABLE_METRICS = ("psnr", "ssim", "lpips", "fd_vgg", "chamfer", "f_score")


@dataclass(frozen=True)
class AblationConfig:
    """Train and evaluate the ablation variants with one budget and seed; write one Markdown/JSON table."""

    out: Path = Path("runs/ablations")
    """Work folder: data/ (when made here), runs/NAME, eval/NAME, logs/, ablations.md, ablations.json."""
    data: Path | None = None
    """An existing dataset (objects; scenes too for --mixed). None: make one with `diffusiongs data synth`."""
    objects: int = 400
    """Objects in the made dataset."""
    scenes: int = 100
    """Scenes in the made dataset (made only with --mixed)."""
    views: int = 32
    """Training views per object (rings of 8 azimuths: exact orbit rigs) / frames per scene of the made dataset."""
    data_res: int | None = None
    """Image side of the made dataset; None: the training resolution."""
    test_fraction: float = 0.1
    """Share of items held out for evaluation in the made dataset."""
    data_workers: int = os.cpu_count() or 1
    """Rendering processes of `data synth`."""
    preset: str = "small"
    """Model preset of every variant."""
    resolution: int | None = 64
    """Training (and evaluation) image side; None: the preset's."""
    steps: int = 2000
    """Optimisation steps per variant (also the length of the LR schedule)."""
    budget_minutes: float | None = None
    """Also stop each variant after this many minutes of training (`train --max-minutes`); the table reports the
    steps each one reached."""
    batch_size: int = 8
    num_workers: int = 4
    """DataLoader workers per training."""
    parallel: int = 1
    """Runs trained (and evaluated) at the same time: a small model leaves most of a GPU idle, so several runs side
    by side finish sooner; each row's minutes then overlap the others'. On a machine with several GPUs the runs
    take turns over them (one GPU per run)."""
    ckpt_every: int | None = 1000
    """Checkpoint every this many steps, so that a stopped invocation resumes (None: only at the end)."""
    lr: float = 4e-4
    warmup_steps: int = 100
    """LR warm-up steps (the paper's 2000 are for 100K-step runs)."""
    point_warmup_steps: int = 150
    """iter0 of the rows with L_pd (the official 150)."""
    seeds: tuple[int, ...] = (0,)
    """Training seeds (initial weights, sample stream, noise): every trained row is run once per seed. The dataset
    and the evaluation noise use seed 0 throughout, so rows and seeds score the same items from the same noise."""
    mixed: bool = False
    """Add the "+ mixed training" row (objects + scenes; later rows keep the scenes)."""
    variants: tuple[str, ...] | None = None
    """Run only these rows (by name: baseline, diffusion, point-loss, mixed, rppc, random-views,
    copy-condition); default: all."""
    eval_limit: int | None = 32
    """Test objects scored per variant (None: all)."""
    eval_steps: int = 30
    """Sampling steps of the evaluation (the paper: DDIM-30)."""
    eval_sampler: SamplerName = "ddim"
    dry_run: bool = False
    """Print the commands and stop."""
    report_only: bool = False
    """Train nothing: evaluate the runs that reached --steps (e.g. after the GPU time ran out with later seeds
    unfinished) and write the table from them; unfinished runs are left out and named."""
    merge: tuple[Path, ...] = ()
    """Run nothing: combine these ablations.json files (invocations with the same settings and different
    --variants, e.g. one per GPU call) into one table in OUT."""


@dataclass(frozen=True)
class Variant:
    """One row: a name, the paper's wording, and the `diffusiongs train` flags that make it."""

    name: str
    label: str
    flags: tuple[str, ...]
    scenes: bool = False


def variants(cfg: AblationConfig) -> list[Variant]:
    """The rows in table order (cumulative, as the paper's Table 2)."""
    no_pd = ("--step.loss.point-warmup-steps", "0")
    pd = ("--step.loss.point-warmup-steps", str(cfg.point_warmup_steps))
    plucker, rppc = ("--ray-embedding", "plucker"), ("--ray-embedding", "rppc")
    orbit, constrained, random = (("--layout.mode", mode) for mode in ("orbit", "constrained", "random"))
    rows = [Variant("baseline", "baseline: w/o timestep (deterministic), Plücker, no L_pd",
                    ("--deterministic", *no_pd, *plucker, *orbit)),
            Variant("diffusion", "+ diffusion", (*no_pd, *plucker, *orbit)),
            Variant("point-loss", "+ L_pd", (*pd, *plucker, *orbit))]
    if cfg.mixed:
        rows.append(Variant("mixed", "+ mixed training (objects + scenes)", (*pd, *plucker, *orbit), True))
    rows += [Variant("rppc", "+ RPPC instead of Plücker (full model, orbit layout)", (*pd, *rppc, *orbit), cfg.mixed),
             Variant("constrained-views", "full model, the paper's angle-constrained layout",
                     (*pd, *rppc, *constrained), cfg.mixed),
             Variant("random-views", "full model, random views", (*pd, *rppc, *random), cfg.mixed)]
    chosen = [v for v in rows if cfg.variants is None or v.name in cfg.variants]
    unknown = set(cfg.variants or ()) - {v.name for v in rows} - {COPY_BASELINE}
    if unknown:
        raise InputError(f"--variants: unknown {sorted(unknown)} (have {[v.name for v in rows]} and {COPY_BASELINE}; "
                         "'mixed' needs --mixed)")
    return chosen


def data_dir(cfg: AblationConfig) -> Path:
    return cfg.data if cfg.data is not None else cfg.out / "data"


def resolution(cfg: AblationConfig) -> int:
    """The training and evaluation image side."""
    return cfg.resolution or preset(cfg.preset).resolution


def synth_command(cfg: AblationConfig) -> list[str]:
    res = cfg.data_res or resolution(cfg)
    return ["data", "synth", "--out", str(data_dir(cfg)), "--objects", str(cfg.objects),
            "--scenes", str(cfg.scenes if cfg.mixed else 0), "--views", str(cfg.views), "--res", str(res),
            "--seed", "0", "--val-fraction", "0", "--test-fraction", str(cfg.test_fraction),
            "--workers", str(cfg.data_workers), "--no-progress"]


def run_dir(cfg: AblationConfig, name: str, seed: int) -> Path:
    return cfg.out / "runs" / name / f"seed{seed}"


def eval_dir(cfg: AblationConfig, name: str, seed: int | None) -> Path:
    return cfg.out / "eval" / name / ("" if seed is None else f"seed{seed}")


def train_command(cfg: AblationConfig, variant: Variant, seed: int) -> list[str]:
    data = str(data_dir(cfg))
    command = ["train", "--out", str(run_dir(cfg, variant.name, seed)), "--preset", cfg.preset,
               "--steps", str(cfg.steps), "--batch-size", str(cfg.batch_size), "--num-workers", str(cfg.num_workers),
               "--seed", str(seed), "--optim.lr", str(cfg.lr), "--optim.warmup-steps", str(cfg.warmup_steps),
               "--log-every", "10", "--image-every", "0",
               "--ckpt-every", str(cfg.ckpt_every or cfg.steps), "--keep-last", "1", "--no-progress", "--data", data,
               "--resolution", str(resolution(cfg))]
    if cfg.budget_minutes is not None:
        command += ["--max-minutes", str(cfg.budget_minutes)]
    if variant.scenes:
        command += ["--scene-data", data]
    return command + list(variant.flags)


def eval_command(cfg: AblationConfig, name: str, seed: int | None) -> list[str]:
    """Evaluate one trained run (``seed``), or the copy-condition baseline (``seed`` None)."""
    source = (["--baseline", COPY_BASELINE, "--resolution", str(resolution(cfg))] if name == COPY_BASELINE
              else ["--checkpoint", str(run_dir(cfg, name, seed))])
    command = ["evaluate", *source, "--data", str(data_dir(cfg)), "--out", str(eval_dir(cfg, name, seed)),
               "--split", "test", "--steps", str(cfg.eval_steps), "--sampler", cfg.eval_sampler,
               "--seed", "0", "--no-progress"]
    return command + (["--limit", str(cfg.eval_limit)] if cfg.eval_limit is not None else [])


def shown(command: list[str]) -> str:
    """The command as a user types it."""
    return shlex.join(["diffusiongs", *command])


def run_logged(command: list[str], log: Path, gpu: int | None = None) -> tuple[bool, float]:
    """Run a `diffusiongs` subcommand in a fresh process (this checkout first on the path), output to ``log``;
    ``gpu``: the only CUDA device it sees."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    print(f"+ {shown(command)}", flush=True)
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"+ {shown(command)}\n")
        out.flush()
        code = subprocess.run([sys.executable, "-m", "diffusiongs.cli.main", *command], stdout=out,
                              stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = log.read_text().splitlines()[-15:]
        print(f"  failed (exit {code}); last lines of {log}:\n    " + "\n    ".join(tail), flush=True)
    return code == 0, seconds


def check_splits(cfg: AblationConfig) -> None:
    """Training needs objects (and, with --mixed, scenes) in the train split; evaluation objects in test."""
    manifest = read_manifest(data_dir(cfg))
    needed = [("train", "object"), ("test", "object")] + ([("train", "scene")] if cfg.mixed else [])
    for split, domain in needed:
        if not any(manifest.items[i][1] == domain for i in manifest.splits.get(split, [])):
            raise InputError(f"{data_dir(cfg)}: no {domain}s in the '{split}' split (make more items or change "
                             "--test-fraction)")


def _reached_step(run: Path) -> int | None:
    folder = latest_checkpoint(run)
    return None if folder is None else json.loads((folder / TRAINER_STATE).read_text())["step"]


def _train(cfg: AblationConfig, variant: Variant, seed: int, gpu: int | None) -> dict[str, Any]:
    """Train (or resume) one variant for one seed; the training seconds add up over resumed invocations."""
    run = run_dir(cfg, variant.name, seed)
    ok, seconds = run_logged(train_command(cfg, variant, seed),
                             cfg.out / "logs" / f"{variant.name}.seed{seed}.train.log", gpu)
    total = seconds + _train_seconds(run)
    if ok:
        write_json(run / TRAIN_TIME, {"train_seconds": total})
    return {"train_ok": ok, "train_minutes": total / 60, "steps_reached": _reached_step(run)}


TRAIN_TIME = "ablation_time.json"
"""A run's training seconds over all invocations that finished it."""


def _train_seconds(run: Path) -> float:
    timing = run / TRAIN_TIME
    return json.loads(timing.read_text())["train_seconds"] if timing.is_file() else 0.0


def _evaluate(cfg: AblationConfig, name: str, seed: int | None, gpu: int | None = None) -> dict[str, Any]:
    """Evaluate one run unless a report newer than its checkpoint exists; returns its summary."""
    summary = eval_dir(cfg, name, seed) / SUMMARY_JSON
    checkpoint = None if seed is None else latest_checkpoint(run_dir(cfg, name, seed))
    fresh = summary.is_file() and (checkpoint is None or summary.stat().st_mtime > checkpoint.stat().st_mtime)
    log_name = f"{name}.eval.log" if seed is None else f"{name}.seed{seed}.eval.log"
    ok = fresh or run_logged(eval_command(cfg, name, seed), cfg.out / "logs" / log_name, gpu)[0]
    return json.loads(summary.read_text()) if ok and summary.is_file() else {}


def _scores(cfg: AblationConfig, name: str, seed: int | None, gpu: int | None = None) -> dict[str, Any]:
    """A run's evaluation summary and its per-object PSNR (from the report's ITEMS_CSV), for the paired gains."""
    summary = _evaluate(cfg, name, seed, gpu)
    items = eval_dir(cfg, name, seed) / ITEMS_CSV
    item_psnr = {}
    if summary and items.is_file():
        with items.open(newline="") as f:
            item_psnr = {r["item_id"]: float(r["psnr"]) for r in csv.DictReader(f) if r["psnr"] != NA}
    return {"summary": summary, "item_psnr": item_psnr}


def _train_and_evaluate(cfg: AblationConfig, variant: Variant, seed: int, gpus: queue.Queue) -> dict[str, Any]:
    """One run on a GPU taken from ``gpus`` (None entries: the default device); with --report-only, only the
    evaluation of a run that reached --steps."""
    gpu = gpus.get()
    try:
        if not cfg.report_only and (cfg.out / STOP).exists():
            print(f"  {variant.name} seed {seed}: not started ({cfg.out / STOP} exists)", flush=True)
            return {"seed": seed, "train_ok": False, "steps_reached": _reached_step(run_dir(cfg, variant.name, seed)),
                    "summary": {}}
        if cfg.report_only:
            steps = _reached_step(run_dir(cfg, variant.name, seed))
            run: dict[str, Any] = {"seed": seed, "train_ok": steps == cfg.steps, "steps_reached": steps,
                                   "train_minutes": _train_seconds(run_dir(cfg, variant.name, seed)) / 60}
        else:
            run = {"seed": seed, **_train(cfg, variant, seed, gpu)}
        run.update(_scores(cfg, variant.name, seed, gpu) if run["train_ok"] else {"summary": {}})
        return run
    finally:
        gpus.put(gpu)


STOP = "STOP"
"""A file in OUT that tells a running invocation to start no more runs (the running ones finish and are scored),
e.g. when the GPU time is about to run out: `touch OUT/STOP`, then `--report-only`."""


def gpu_slots(parallel: int) -> queue.Queue:
    """``parallel`` slots dealt round-robin over the visible GPUs (one None slot per run without GPUs)."""
    count = torch.cuda.device_count()
    slots: queue.Queue = queue.Queue()
    for i in range(max(1, parallel)):
        slots.put(i % count if count > 1 else None)
    return slots


T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Two-sided 95 % quantiles of Student's t by degrees of freedom (more seeds than 10 use 2.0)."""
FRONT_DEG = 90.0
"""Targets within this azimuth of the condition view count as its "front" (the paper's constrained layout only
ever denoises and supervises views near the condition)."""


def front_psnr(summary: dict[str, Any], orbit_views: int = 16) -> float | None:
    """Mean PSNR over the target views of the evaluation orbit within ``FRONT_DEG`` of the condition (view 0)."""
    by_view = summary.get("metrics", {}).get("psnr_by_view") or {}
    front = [v for k, v in by_view.items() if min(int(k), orbit_views - int(k)) * 360 / orbit_views <= FRONT_DEG]
    return sum(front) / len(front) if front else None


def metric_values(runs: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each table metric's values over a row's evaluated runs (seeds)."""
    values: dict[str, list[float]] = {m: [] for m in (*TABLE_METRICS, "front_psnr")}
    for run in runs:
        metrics = run.get("summary", {}).get("metrics")
        if not metrics:
            continue
        for m in TABLE_METRICS:
            if metrics.get(m) is not None:
                values[m].append(float(metrics[m]))
        front = front_psnr(run["summary"])
        if front is not None:
            values["front_psnr"].append(front)
    return values


def mean_and_ci(values: list[float]) -> tuple[float, float | None] | None:
    """Mean and the half-width of its 95 % confidence interval (None for a single value)."""
    if not values:
        return None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return mean, T_95.get(len(values) - 1, 2.0) * std / math.sqrt(len(values))


def _cell(stat: tuple[float, float | None] | None, digits: int) -> str:
    if stat is None:
        return NA
    mean, half = stat
    return format_value(mean, digits) + ("" if half is None else f" ± {format_value(half, digits)}")


TABLE_COLUMNS = (("psnr", "PSNR ↑", 2), ("front_psnr", "front PSNR ↑", 2), ("ssim", "SSIM ↑", 4),
                 ("lpips", "LPIPS ↓", 4), ("fd_vgg", "FD-VGG16 ↓", 2), ("chamfer", "Chamfer ↓", 4),
                 ("f_score", "F-score ↑", 4))


COMPARED_WITH = {"constrained-views": "rppc", "random-views": "rppc"}
"""Rows compared with another than the row above them: the layouts against the full model's orbit layout."""


def item_psnr(row: dict[str, Any]) -> dict[str, float]:
    """Each scored object's PSNR in a row, averaged over the row's seeds."""
    by_item: dict[str, list[float]] = {}
    for run in row.get("runs", []):
        for item, psnr in (run.get("item_psnr") or {}).items():
            by_item.setdefault(item, []).append(psnr)
    return {item: sum(v) / len(v) for item, v in by_item.items()}


def paired_difference(row: dict[str, float], other: dict[str, float]) -> tuple[float, float | None] | None:
    """PSNR of ``row`` minus ``other``, paired by object: mean and 95 % CI over the objects both scored. Pairing
    removes how hard each object is, so it tells two rows apart far more sharply than their separate intervals;
    it measures the spread over test objects, not over training seeds. None without per-object scores."""
    return mean_and_ci([psnr - other[item] for item, psnr in row.items() if item in other])


def reference_rows(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each trained row's reference for the paired change: the trained row above it, or COMPARED_WITH's."""
    trained = [r for r in rows if r["name"] != COPY_BASELINE]
    by_name = {r["name"]: r for r in trained}
    references = {}
    for above, row in zip([None, *trained], trained):
        reference = by_name.get(COMPARED_WITH.get(row["name"], ""), above)
        if reference is not None:
            references[row["name"]] = reference
    return references


def table_row(label: str, row: dict[str, Any], copy: dict[str, float],
              reference: dict[str, Any] | None = None) -> list[str]:
    """Mean ± 95 % CI of each metric over the row's seeds; the PSNR gain over copying the input and the change from
    ``reference`` (the row it adds to), both paired by object with CIs over objects; seeds evaluated, steps
    reached, training minutes."""
    runs = row.get("runs", [])
    values = metric_values(runs)
    steps = sorted({r.get("steps_reached") for r in runs if r.get("steps_reached") is not None})
    minutes = [r["train_minutes"] for r in runs if r.get("train_minutes") is not None]
    evaluated = any(r.get("summary", {}).get("metrics") for r in runs)
    cells = [_cell(mean_and_ci(values[key]), digits) if evaluated else "failed" for key, _, digits in TABLE_COLUMNS]
    trained = row.get("name") != COPY_BASELINE
    gain = _cell(paired_difference(item_psnr(row), copy), 2) if copy and trained else NA
    change_stat = None if reference is None else paired_difference(item_psnr(row), item_psnr(reference))
    change = NA if change_stat is None else f"{_cell(change_stat, 2)} vs {reference['name']}"
    return [label, cells[0], gain, change, *cells[1:],
            str(len(values["psnr"])), "/".join(map(str, steps)) or NA,
            format_value(sum(minutes) / len(minutes), 1) if minutes else NA]


def trained_seeds(rows: list[dict[str, Any]]) -> list[int]:
    """The training seeds that some row has a run of."""
    return sorted({r["seed"] for row in rows for r in row.get("runs", []) if r.get("seed") is not None})


def evaluating_machines(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each machine that scored the rows' runs (from the evaluation summaries), with its latest date."""
    latest: dict[str, dict[str, Any]] = {}
    for run in (r for row in rows for r in row.get("runs", [])):
        summary = run.get("summary") or {}
        if "machine" in summary:
            key = json.dumps(summary["machine"], sort_keys=True)
            if key not in latest or summary["date"] > latest[key]["date"]:
                latest[key] = {"machine": summary["machine"], "date": summary["date"]}
    return list(latest.values())


def write_tables(cfg: AblationConfig, rows: list[dict[str, Any]], commands: list[str], made_with: list[str],
                 runs: list[dict[str, Any]]) -> Path:
    """OUT/ablations.md and OUT/ablations.json; ``runs`` holds the machine and date of each invocation."""
    first = next((r["summary"] for row in rows for r in row.get("runs", []) if r.get("summary")), {})
    settings = first.get("settings", {})
    headers = ["variant", TABLE_COLUMNS[0][1], "PSNR gain over copy", "PSNR change from the row it adds to",
               *(title for _, title, _ in TABLE_COLUMNS[1:]), "seeds", "steps", "train min"]
    copy = next((item_psnr(row) for row in rows if row["name"] == COPY_BASELINE), {})
    references = reference_rows(rows)
    side_by_side = f"; {cfg.parallel} runs side by side, sharing the machine's GPUs" if cfg.parallel > 1 else ""
    budget = f"{cfg.steps} steps" + ("" if cfg.budget_minutes is None else f" or {cfg.budget_minutes} min")
    machines = "; ".join(f"{r['machine']['device']}, {r['machine']['cpu_count']} CPU cores, torch "
                         f"{r['machine']['torch']}, {r['date']}" for r in runs)
    text = "\n".join([
        "# Ablations (paper Table 2 steps, small scale)", "",
        f"Preset `{cfg.preset}` at {resolution(cfg)} px, batch {cfg.batch_size}, {budget} per run, training seeds "
        f"{trained_seeds(rows)} (cells: mean ± 95 % CI over seeds; the gain and change columns: PSNR differences "
        f"paired by test object, ± 95 % CI over objects), LR {cfg.lr} (warm-up {cfg.warmup_steps}), EMA "
        f"with warm-up{side_by_side}. Evaluation: {settings.get('protocol', 'see docs/RESULTS.md')} (each row on "
        f"its own layout); {cfg.eval_sampler} with {cfg.eval_steps} steps, noise seed 0 (the deterministic row: one "
        f"pass); front PSNR: targets within {FRONT_DEG:g}° of azimuth of the input; "
        f"LPIPS: {settings.get('LPIPS', 'n/a')}; {settings.get('data', '')}.",
        f"Machine: {machines}.", "",
        markdown_table(headers, [table_row(r["label"], r, copy, references.get(r["name"])) for r in rows]), "",
        "Commands, in order:", "", "```", *commands, "```", "",
        *(f"Made with `{command}`." for command in made_with), ""])
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cfg.out / "ablations.md", text.encode())
    write_json(cfg.out / "ablations.json", {"rows": rows, "commands": commands, "made_with": made_with,
                                            "config": config_to_dict(cfg), "runs": runs})
    return cfg.out / "ablations.md"


MERGE_IGNORED = {"out", "variants", "merge", "dry_run", "data_workers", "parallel", "seeds", "ckpt_every",
                 "report_only"}
"""Settings that may differ between the invocations merged into one table (`data synth` makes the same items
whatever the number of workers)."""


def merge(cfg: AblationConfig) -> Path:
    """One table from the ablations.json of several invocations with the same settings (e.g. the variants split
    over GPU calls); rows in table order, a later file's row replacing an earlier one of the same name."""
    payloads = []
    for path in cfg.merge:
        try:
            payloads.append(json.loads(path.read_text()))
        except (OSError, ValueError) as err:
            raise InputError(f"{path}: cannot read an ablations.json ({err})") from err
    base = {k: v for k, v in payloads[0]["config"].items() if k not in MERGE_IGNORED}
    for path, payload in zip(cfg.merge, payloads):
        other = {k: v for k, v in payload["config"].items() if k not in MERGE_IGNORED}
        if other != base:
            changed = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))
            raise InputError(f"{path}: made with other settings than {cfg.merge[0]} ({changed})")
    seeds = sorted({seed for payload in payloads for seed in payload["config"]["seeds"]})
    merged = config_from_dict(AblationConfig, {**payloads[0]["config"], "out": str(cfg.out), "variants": None,
                                               "merge": [], "seeds": seeds})
    order = [v.name for v in variants(merged)] + [COPY_BASELINE]
    rows: dict[str, dict[str, Any]] = {}
    for payload in payloads:  # runs of one row from several invocations (e.g. seeds split over GPU calls)
        for row in payload["rows"]:
            merged_row = rows.setdefault(row["name"], {**row, "runs": []})
            seeds = {r["seed"] for r in row["runs"]}
            merged_row["runs"] = [r for r in merged_row["runs"] if r["seed"] not in seeds] + row["runs"]
    commands = list(dict.fromkeys(c for payload in payloads for c in payload["commands"]))
    return write_tables(merged, [rows[name] for name in order if name in rows], commands,
                        [c for payload in payloads for c in payload["made_with"]],
                        [run for payload in payloads for run in payload["runs"]])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = tyro.cli(AblationConfig, args=argv, prog="python benchmarks/ablations.py")
    if cfg.merge:
        path = merge(cfg)
        print(f"wrote {path} and {path.with_suffix('.json')}")
        return 0
    chosen = variants(cfg)
    with_copy = cfg.variants is None or COPY_BASELINE in cfg.variants
    jobs = [(v, seed) for seed in cfg.seeds for v in chosen]  # every row's first seed first
    plan = ([synth_command(cfg)] if cfg.data is None else []) + [
        c for v, seed in jobs for c in (train_command(cfg, v, seed), eval_command(cfg, v.name, seed))]
    plan += [eval_command(cfg, COPY_BASELINE, None)] if with_copy else []
    commands = [shown(c) for c in plan]
    if cfg.dry_run:
        print("\n".join(commands))
        return 0
    make_data = cfg.data is None and not cfg.report_only
    if make_data and not run_logged(synth_command(cfg), cfg.out / "logs" / "data.log")[0]:
        return 1
    check_splits(cfg)
    gpus = gpu_slots(cfg.parallel)
    with ThreadPoolExecutor(max_workers=max(1, cfg.parallel)) as pool:  # threads only wait on subprocesses
        results = list(pool.map(lambda job: _train_and_evaluate(cfg, *job, gpus), jobs))
    if cfg.report_only:  # rows keep only their finished runs
        unfinished = [f"{v.name} seed {seed} ({r['steps_reached'] or 0} steps)"
                      for (v, seed), r in zip(jobs, results) if not r["train_ok"]]
        print(f"left out, not trained to {cfg.steps} steps: {', '.join(unfinished)}" if unfinished else
              "every run reached --steps")
        results = [r if r["train_ok"] else None for r in results]
    rows = [{"name": v.name, "label": v.label, "flags": list(v.flags),
             "runs": [r for (job, _), r in zip(jobs, results) if job is v and r is not None]} for v in chosen]
    if with_copy:
        rows.append({"name": COPY_BASELINE, "label": "copy-condition baseline (no training)", "flags": [],
                     "runs": [{"seed": None, **_scores(cfg, COPY_BASELINE, None)}]})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    machines = evaluating_machines(rows) or [{"machine": machine_info(device), "date": utc_now()}]
    path = write_tables(cfg, rows, commands, [shlex.join(["python", "benchmarks/ablations.py", *argv])], machines)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0 if all(r.get("summary") for row in rows for r in row["runs"]) else 1


if __name__ == "__main__":
    exit_with(main, "ablations")
