"""The paper's Table 2 ablation at small scale: every step trained with the same budget and seed, then evaluated on
the same held-out objects with the protocol of docs/RESULTS.md.

Rows (cumulative, as in the paper): the deterministic "w/o timestep" baseline (Plücker rays, no L_pd) -> + diffusion
-> + L_pd (point-distribution warm-up) -> [+ mixed object/scene training, with --mixed] -> + RPPC (the full model);
then the full model with random instead of angle-constrained view selection, and the copy-condition baseline,
which needs no training.

    python benchmarks/ablations.py --out runs/ablations --preset small --resolution 64 --steps 2000
    python benchmarks/ablations.py --out /tmp/abl --preset tiny --resolution 32 --objects 6 --steps 2 ...  # smoke

Steps: (a) unless --data is given, make a dataset with `diffusiongs data synth` (objects, plus scenes with
--mixed); (b) `diffusiongs train` every variant; (c) `diffusiongs evaluate` each on the test split; (d) write
OUT/ablations.md and OUT/ablations.json with the table, the exact commands, the machine and the date.
Re-running resumes: the dataset and finished trainings are kept, evaluations newer than their checkpoint are reused.

The budget is ``--steps`` (the same for every row, and the length of each LR schedule); ``--budget-minutes`` only
caps a row's training time, and the table reports the steps each row reached. Rows can be split over several
invocations (``--variants``, e.g. one per GPU call, with otherwise identical flags) and combined with
``--merge A/ablations.json B/ablations.json``: `data synth` makes the same dataset on every machine.
"""

from __future__ import annotations

import json
import os
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
    DIGITS,
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
TABLE_METRICS = ("psnr", "ssim", "lpips", "chamfer", "f_score")


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
    """Random training views per object / frames per scene of the made dataset."""
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
    """Variants trained (and evaluated) at the same time on the one device: a small model leaves most of a GPU
    idle, so several runs side by side finish sooner; each row's minutes then overlap the others'."""
    lr: float = 4e-4
    warmup_steps: int = 100
    """LR warm-up steps (the paper's 2000 are for 100K-step runs)."""
    point_warmup_steps: int = 150
    """iter0 of the rows with L_pd (the official 150)."""
    seed: int = 0
    """Seed of every training (initial weights, sample stream, noise) and evaluation."""
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
    constrained, random = ("--selection.mode", "constrained"), ("--selection.mode", "random")
    rows = [Variant("baseline", "baseline: w/o timestep (deterministic), Plücker, no L_pd",
                    ("--deterministic", *no_pd, *plucker, *constrained)),
            Variant("diffusion", "+ diffusion", (*no_pd, *plucker, *constrained)),
            Variant("point-loss", "+ L_pd", (*pd, *plucker, *constrained))]
    if cfg.mixed:
        rows.append(Variant("mixed", "+ mixed training (objects + scenes)", (*pd, *plucker, *constrained), True))
    rows += [Variant("rppc", "+ RPPC instead of Plücker (full model)", (*pd, *rppc, *constrained), cfg.mixed),
             Variant("random-views", "full model, random view selection", (*pd, *rppc, *random), cfg.mixed)]
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
            "--seed", str(cfg.seed), "--val-fraction", "0", "--test-fraction", str(cfg.test_fraction),
            "--workers", str(cfg.data_workers), "--no-progress"]


def train_command(cfg: AblationConfig, variant: Variant) -> list[str]:
    data = str(data_dir(cfg))
    command = ["train", "--out", str(cfg.out / "runs" / variant.name), "--preset", cfg.preset,
               "--steps", str(cfg.steps), "--batch-size", str(cfg.batch_size), "--num-workers", str(cfg.num_workers),
               "--seed", str(cfg.seed), "--optim.lr", str(cfg.lr), "--optim.warmup-steps", str(cfg.warmup_steps),
               # EMA at 0.9999 averages over ~10K steps, longer than these runs; the cosine decay to 0 settles the
               # raw weights instead.
               "--optim.ema-decay", "None", "--log-every", "10", "--image-every", "0",
               "--ckpt-every", str(cfg.steps), "--keep-last", "1", "--no-progress", "--data", data,
               "--resolution", str(resolution(cfg))]
    if cfg.budget_minutes is not None:
        command += ["--max-minutes", str(cfg.budget_minutes)]
    if variant.scenes:
        command += ["--scene-data", data]
    return command + list(variant.flags)


def eval_command(cfg: AblationConfig, name: str) -> list[str]:
    source = (["--baseline", COPY_BASELINE, "--resolution", str(resolution(cfg))] if name == COPY_BASELINE
              else ["--checkpoint", str(cfg.out / "runs" / name)])
    command = ["evaluate", *source, "--data", str(data_dir(cfg)), "--out", str(cfg.out / "eval" / name),
               "--split", "test", "--steps", str(cfg.eval_steps), "--sampler", cfg.eval_sampler,
               "--seed", str(cfg.seed), "--no-progress"]
    return command + (["--limit", str(cfg.eval_limit)] if cfg.eval_limit is not None else [])


def shown(command: list[str]) -> str:
    """The command as a user types it."""
    return shlex.join(["diffusiongs", *command])


def run_logged(command: list[str], log: Path) -> tuple[bool, float]:
    """Run a `diffusiongs` subcommand in a fresh process (this checkout first on the path), output to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
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


def _train(cfg: AblationConfig, variant: Variant) -> dict[str, Any]:
    """Train (or resume) one variant; the training seconds add up over resumed invocations."""
    run = cfg.out / "runs" / variant.name
    ok, seconds = run_logged(train_command(cfg, variant), cfg.out / "logs" / f"{variant.name}.train.log")
    timing = run / "ablation_time.json"
    total = seconds + (json.loads(timing.read_text())["train_seconds"] if timing.is_file() else 0.0)
    if ok:
        write_json(timing, {"train_seconds": total})
    return {"train_ok": ok, "train_minutes": total / 60, "steps_reached": _reached_step(run)}


def _evaluate(cfg: AblationConfig, name: str) -> dict[str, Any]:
    """Evaluate one variant unless a report newer than its checkpoint exists; returns its summary."""
    summary = cfg.out / "eval" / name / SUMMARY_JSON
    checkpoint = latest_checkpoint(cfg.out / "runs" / name)
    fresh = summary.is_file() and (checkpoint is None or summary.stat().st_mtime > checkpoint.stat().st_mtime)
    ok = fresh or run_logged(eval_command(cfg, name), cfg.out / "logs" / f"{name}.eval.log")[0]
    return json.loads(summary.read_text()) if ok and summary.is_file() else {}


def _train_and_evaluate(cfg: AblationConfig, variant: Variant) -> dict[str, Any]:
    row: dict[str, Any] = {"name": variant.name, "label": variant.label, "flags": list(variant.flags)}
    row.update(_train(cfg, variant))
    row["summary"] = _evaluate(cfg, variant.name) if row["train_ok"] else {}
    return row


def table_row(label: str, row: dict[str, Any]) -> list[str]:
    """Metrics, steps reached and training minutes of one row (``failed`` where no evaluation exists)."""
    metrics = row.get("summary", {}).get("metrics")
    cells = [format_value(metrics[m], DIGITS[m]) for m in TABLE_METRICS] if metrics else ["failed"] * 5
    return [label, *cells, format_value(row.get("steps_reached")), format_value(row.get("train_minutes"), 1)]


def write_tables(cfg: AblationConfig, rows: list[dict[str, Any]], commands: list[str], made_with: list[str],
                 runs: list[dict[str, Any]]) -> Path:
    """OUT/ablations.md and OUT/ablations.json; ``runs`` holds the machine and date of each invocation."""
    first = next((r["summary"] for r in rows if r.get("summary")), {})
    settings = first.get("settings", {})
    headers = ["variant", "PSNR ↑", "SSIM ↑", "LPIPS ↓", "Chamfer ↓", "F-score ↑", "steps", "train min"]
    side_by_side = f"; {cfg.parallel} variants trained side by side on one device" if cfg.parallel > 1 else ""
    budget = f"{cfg.steps} steps" + ("" if cfg.budget_minutes is None else f" or {cfg.budget_minutes} min")
    machines = "; ".join(f"{r['machine']['device']}, {r['machine']['cpu_count']} CPU cores, torch "
                         f"{r['machine']['torch']}, {r['date']}" for r in runs)
    text = "\n".join([
        "# Ablations (paper Table 2 steps, small scale)", "",
        f"Preset `{cfg.preset}` at {resolution(cfg)} px, batch {cfg.batch_size}, {budget} per variant, "
        f"seed {cfg.seed}, LR {cfg.lr} (warm-up {cfg.warmup_steps}), no EMA{side_by_side}. Evaluation: "
        f"{settings.get('protocol', 'see docs/RESULTS.md')}; {cfg.eval_sampler} with {cfg.eval_steps} steps, "
        f"seed {cfg.seed} (the deterministic row: one pass); "
        f"LPIPS: {settings.get('LPIPS', 'n/a')}; {settings.get('data', '')}.",
        f"Machine: {machines}.", "",
        markdown_table(headers, [table_row(r["label"], r) for r in rows]), "",
        "Commands, in order:", "", "```", *commands, "```", "",
        *(f"Made with `{command}`." for command in made_with), ""])
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(cfg.out / "ablations.md", text.encode())
    write_json(cfg.out / "ablations.json", {"rows": rows, "commands": commands, "made_with": made_with,
                                            "config": config_to_dict(cfg), "runs": runs})
    return cfg.out / "ablations.md"


MERGE_IGNORED = {"out", "variants", "merge", "dry_run", "data_workers", "parallel"}
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
    merged = config_from_dict(AblationConfig, {**payloads[0]["config"], "out": str(cfg.out), "variants": None,
                                               "merge": []})
    order = [v.name for v in variants(merged)] + [COPY_BASELINE]
    rows = {r["name"]: r for payload in payloads for r in payload["rows"]}
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
    plan = ([synth_command(cfg)] if cfg.data is None else []) + [c for v in chosen for c in
                                                                  (train_command(cfg, v), eval_command(cfg, v.name))]
    plan += [eval_command(cfg, COPY_BASELINE)] if with_copy else []
    commands = [shown(c) for c in plan]
    if cfg.dry_run:
        print("\n".join(commands))
        return 0
    if cfg.data is None and not run_logged(synth_command(cfg), cfg.out / "logs" / "data.log")[0]:
        return 1
    check_splits(cfg)
    with ThreadPoolExecutor(max_workers=max(1, cfg.parallel)) as pool:  # threads only wait on subprocesses
        rows = list(pool.map(lambda variant: _train_and_evaluate(cfg, variant), chosen))
    if with_copy:
        rows.append({"name": COPY_BASELINE, "label": "copy-condition baseline (no training)", "flags": [],
                     "summary": _evaluate(cfg, COPY_BASELINE)})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    path = write_tables(cfg, rows, commands, [shlex.join(["python", "benchmarks/ablations.py", *argv])],
                        [{"machine": machine_info(device), "date": utc_now()}])
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0 if all(r["summary"] for r in rows) else 1


if __name__ == "__main__":
    exit_with(main, "ablations")
