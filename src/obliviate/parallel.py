"""The process state shared by training and evaluation under data parallelism.

Runs started by `accelerate launch` (GPUs: DDP, FSDP, DeepSpeed) or by `torchrun` (CPU
processes, gloo) all go through accelerate. On a machine without a GPU its state must be made
with cpu=True, or processes started by torchrun would not join one group; every caller
therefore takes the state from here.
"""

from __future__ import annotations

import torch


def process_state():
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    """False on the other processes of a data-parallel run: they compute their share; the main
    process writes and prints."""
    return process_state().is_main_process
