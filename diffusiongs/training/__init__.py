"""Training: losses, the pure train step, the trainer, checkpoints, DDP.

Modules (import them directly; this package imports nothing so that ``import diffusiongs.training.losses`` stays
light):
    losses       L2 + LPIPS denoising and novel-view losses, the point-distribution warm-up
    step         the pure train step
    trainer      the training loop, logging, EMA, resume
    checkpoint   atomic checkpoints
    distributed  DDP under torchrun
"""
