"""Tiny models: one torch thread is fastest here and leaves the machine's other cores alone."""

import torch

torch.set_num_threads(1)
