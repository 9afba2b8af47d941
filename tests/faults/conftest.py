"""Fault injection: tiny models, one torch thread (as in tests/train)."""

import torch

torch.set_num_threads(1)
