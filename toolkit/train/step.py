"""``DiffusionStep``: one training batch's forward pass, ``batch -> loss``.

The batch is encoded (or taken from the caches), noised, denoised and scored. Edit pairs' reference images are
encoded like the targets (or taken from the latent cache) and added to the conditioning by the adapter's
``with_references``. Only the adapter network is a submodule, so under data parallelism DDP wraps just the
adapter's parameters, never the frozen base model.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from toolkit.data.masks import latent_mask, normalised
from toolkit.train.loss import diffusion_loss

if TYPE_CHECKING:
    from toolkit.models.base import ModelAdapter
    from toolkit.network.network import Network
    from toolkit.train.noise import Objective
    from toolkit.train.preservation import Preservation


class DiffusionStep(nn.Module):
    """``forward(batch) -> loss``. Only the network is a submodule, so DDP wraps just the adapter's parameters."""

    def __init__(self, adapter: "ModelAdapter", network: "Network", objective: "Objective", *, loss_type: str,
                 huber_c: float, train_text_encoder: bool, generator: torch.Generator, cast_inputs: bool | None = None,
                 preservation: "Preservation | None" = None):
        """``cast_inputs``: whether the LoRA layers cast their inputs to the adapter dtype; None decides on the first
        call (not under autocast, see ``Network.cast_inputs``). ``preservation``: prior preservation terms."""
        super().__init__()
        self.network = network
        self.adapter = adapter
        self.objective = objective
        self.loss_type = loss_type
        self.huber_c = huber_c
        self.train_text_encoder = train_text_encoder
        self.generator = generator
        self._cast_inputs = cast_inputs
        self.preservation = preservation
        if cast_inputs is not None:
            network.cast_inputs(cast_inputs)

    def forward(self, batch: Any) -> torch.Tensor:
        adapter = self.adapter
        device = adapter.device
        if self._cast_inputs is None:  # under mixed precision the LoRA inputs need no cast (see Network.cast_inputs)
            self._cast_inputs = not torch.is_autocast_enabled(device.type)
            self.network.cast_inputs(self._cast_inputs)
        with torch.no_grad():
            if batch.latents is not None:
                latents = batch.latents.to(device)
            else:
                latents = adapter.encode_images(batch.pixels.to(device))
            references = _reference_latents(adapter, batch)
        if batch.cond is not None:
            cond = {key: value.to(device) for key, value in batch.cond.items()}
        else:
            seen = _seen_references(adapter, batch)
            with torch.set_grad_enabled(self.train_text_encoder):
                cond = adapter.encode_prompts(list(batch.captions), references=seen) if seen else adapter.encode_prompts(list(batch.captions))
        if references:
            cond = adapter.with_references(cond, references)
        noised = self.objective.apply(latents, self.generator)
        info = list(batch.image_info)
        weight = getattr(batch, "network_weight", 1.0)
        with self.network.scaled(weight) if weight != 1.0 else nullcontext():
            prediction = adapter.predict(noised.noisy, noised.timesteps, cond, info)
            masks = getattr(batch, "masks", None)
            mask = latent_mask(masks.to(device), tuple(prediction.shape[-2:])) if masks is not None else None
            loss = diffusion_loss(prediction, noised.target, self.loss_type, huber_c=self.huber_c,
                                  weights=sample_weights(noised.weights, getattr(batch, "loss_weights", None)),
                                  mask=normalised(mask) if mask is not None else None)
            if self.preservation is not None:
                loss = loss + self.preservation.loss(adapter, self.network, noised.noisy, noised.timesteps,
                                                     list(batch.captions), cond, info, prediction, mask)
        return loss


def sample_weights(schedule: torch.Tensor | None, dataset: torch.Tensor | None) -> torch.Tensor | None:
    """The timestep weighting and the datasets' loss weights of each sample, multiplied (None: neither)."""
    if dataset is None:
        return schedule
    dataset = dataset.to(schedule.device if schedule is not None else dataset.device)
    return dataset if schedule is None else schedule * dataset.to(schedule)


def _reference_latents(adapter: "ModelAdapter", batch: Any) -> list[torch.Tensor]:
    """The batch's reference latents on the device, one tensor per slot (cached, or encoded now); [] without any."""
    if batch.reference_latents:
        return [latents.to(adapter.device) for latents in batch.reference_latents]
    return [adapter.encode_images(pixels.to(adapter.device)) for pixels in batch.reference_pixels or []]


def _seen_references(adapter: "ModelAdapter", batch: Any) -> "list[list[torch.Tensor]] | None":
    """Per row, its reference pixels, for an architecture whose text encoder reads them; else None."""
    spec = adapter.arch.spec.references
    pixels = batch.reference_pixels
    if spec is None or not spec.text_encoder_sees or not pixels:
        return None
    return [[slot[row].to(adapter.device) for slot in pixels] for row in range(len(batch.captions))]
