"""Prior preservation terms ai-toolkit users turn on for character LoRAs, added to the diffusion loss.

- ``diff_output_preservation`` (DOP): each caption with the trigger word replaced by a class word (``woman``)
  must give the prediction the base model gives, on the same noisy latents: ``mse(pred_lora, pred_base)``;
- ``blank_prompt_preservation``: the same with the empty prompt;
- ``inverted_mask_prior``: outside a dataset's loss mask, the prediction is pulled towards the base model's
  prediction for the same caption, ``mean((pred - pred_base)^2 * (1 - mask))`` (the weights normalised to mean 1).

The base model's prediction is the network switched off, without gradients; each term is scaled by its multiplier.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from toolkit.data.captions import contains_phrase

if TYPE_CHECKING:
    import torch

    from toolkit.config.blocks import TrainConfig
    from toolkit.models.base import ModelAdapter
    from toolkit.network.network import Network


def class_prompts(captions: list[str], trigger: str | None, class_word: str) -> list[str]:
    """ai-toolkit's DOP prompts: the trigger replaced by the class word; the class word alone where it is absent."""
    if not trigger:
        return [class_word for _ in captions]
    pattern = re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in trigger.split()) + r"(?!\w)", re.IGNORECASE)
    return [pattern.sub(class_word, caption) if contains_phrase(caption, trigger) else class_word for caption in captions]


@contextmanager
def network_off(network: "Network") -> Iterator[None]:
    """The base model inside the block (the adapter kept, not applied)."""
    was = network.enabled
    network.disable()
    try:
        yield
    finally:
        if was:
            network.enable()


def base_prediction(adapter: "ModelAdapter", network: "Network", noisy: "torch.Tensor", timesteps: "torch.Tensor",
                    cond: Any, image_info: list[Any]) -> "torch.Tensor":
    """The base model's prediction (no adapter, no gradient)."""
    import torch

    with torch.no_grad(), network_off(network):
        return adapter.predict(noisy, timesteps, cond, image_info).detach()


def preservation_loss(adapter: "ModelAdapter", network: "Network", noisy: "torch.Tensor", timesteps: "torch.Tensor",
                      prompts: list[str], image_info: list[Any]) -> "torch.Tensor":
    """``mse(prediction with the adapter, base prediction)`` for ``prompts`` on the same noisy latents."""
    import torch

    with torch.no_grad():
        cond = adapter.encode_prompts(prompts)
    prior = base_prediction(adapter, network, noisy, timesteps, cond, image_info)
    prediction = adapter.predict(noisy, timesteps, cond, image_info)
    return torch.nn.functional.mse_loss(prediction.float(), prior.float())


def inverted_mask_prior_loss(prediction: "torch.Tensor", prior: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """The prior term outside the mask: ``mask`` is the latent-sized mask in [mask_min_value, 1] (``latent_mask``)."""
    from toolkit.data.masks import normalised

    return ((prediction.float() - prior.float()) ** 2 * normalised(1.0 - mask)).mean()


@dataclass(frozen=True)
class Preservation:
    """The preservation terms a run adds (``preservation_for``), applied by ``DiffusionStep``."""

    trigger: str | None
    dop_class: str | None = None
    """DOP's class word (None: no DOP)."""
    dop_multiplier: float = 1.0
    blank_multiplier: float | None = None
    """Weight of the blank-prompt term (None: none)."""
    inverted_multiplier: float | None = None
    """Weight of the inverted-mask prior (None: none)."""

    def loss(self, adapter: "ModelAdapter", network: "Network", noisy: "torch.Tensor", timesteps: "torch.Tensor",
             captions: list[str], cond: Any, image_info: list[Any], prediction: "torch.Tensor",
             mask: "torch.Tensor | None") -> "torch.Tensor":
        """The sum of the active terms for one batch (``mask``: its latent-sized loss mask, if any)."""
        total = prediction.new_zeros(()).float()
        if self.dop_class is not None:
            prompts = class_prompts(captions, self.trigger, self.dop_class)
            total = total + self.dop_multiplier * preservation_loss(adapter, network, noisy, timesteps, prompts, image_info)
        if self.blank_multiplier is not None:
            blank = ["" for _ in captions]
            total = total + self.blank_multiplier * preservation_loss(adapter, network, noisy, timesteps, blank, image_info)
        if self.inverted_multiplier is not None and mask is not None:
            prior = base_prediction(adapter, network, noisy, timesteps, cond, image_info)
            total = total + self.inverted_multiplier * inverted_mask_prior_loss(prediction, prior, mask)
        return total


def preservation_for(train: "TrainConfig", trigger: str | None) -> Preservation | None:
    """The run's preservation terms, or None when it has none."""
    if not (train.diff_output_preservation or train.blank_prompt_preservation or train.inverted_mask_prior):
        return None
    return Preservation(
        trigger=trigger, dop_class=train.diff_output_preservation_class if train.diff_output_preservation else None,
        dop_multiplier=train.diff_output_preservation_multiplier,
        blank_multiplier=train.blank_prompt_preservation_multiplier if train.blank_prompt_preservation else None,
        inverted_multiplier=train.inverted_mask_prior_multiplier if train.inverted_mask_prior else None)


def preservation_summary(train: "TrainConfig") -> str:
    """The dry-run words for the run's preservation terms ('' when none)."""
    parts = []
    if train.diff_output_preservation:
        parts.append(f"diff output preservation (class {train.diff_output_preservation_class!r}, "
                     f"x{train.diff_output_preservation_multiplier:g})")
    if train.blank_prompt_preservation:
        parts.append(f"blank prompt preservation (x{train.blank_prompt_preservation_multiplier:g})")
    if train.inverted_mask_prior:
        parts.append(f"inverted mask prior (x{train.inverted_mask_prior_multiplier:g})")
    return " + ".join(["diffusion", *parts]) if parts else ""
