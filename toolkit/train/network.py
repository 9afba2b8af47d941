"""The adapter network a run trains: which modules of which components, their learning rates, its start."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from toolkit.errors import EaselError
from toolkit.log import log

if TYPE_CHECKING:
    from toolkit.config.train import LoraTrainerConfig
    from toolkit.models.base import ModelAdapter
    from toolkit.network.network import Network


def network_targets(config: "LoraTrainerConfig", adapter: "ModelAdapter") -> dict[str, list[str]]:
    """Target names per trained component: ``network.target_modules`` or the architecture's defaults."""
    train, network = config.train, config.network
    trained = ([adapter.denoiser_name] if train.train_unet else []) + (adapter.trained_text_encoders() if train.train_text_encoder else [])
    if network.target_modules:
        return {component: list(network.target_modules) for component in trained}
    defaults = adapter.lora_targets(train.train_text_encoder)
    return {component: names for component, names in defaults.items() if component in trained}


def learning_rates(config: "LoraTrainerConfig", adapter: "ModelAdapter") -> dict[str, float]:
    """Learning rate per component: ``unet_lr`` / ``text_encoder_lr``, else ``lr``."""
    train = config.train
    rates = {adapter.denoiser_name: train.unet_lr or train.lr}
    rates.update({name: train.text_encoder_lr or train.lr for name in adapter.text_encoders})
    return rates


def build_network(config: "LoraTrainerConfig", adapter: "ModelAdapter") -> "Network":
    """Wrap the trained components, in float32, starting from ``pretrained_lora_path`` if set."""
    from toolkit.network.network import Network

    layout = adapter.network_layout()
    if config.network.target_modules:  # the layers asked for by name are taken as given
        layout = replace(layout, transformer_blocks=())
    network = Network.build(adapter.components(), network_targets(config, adapter), config.network, layout=layout)
    network.float()
    start_path = config.network.pretrained_lora_path
    if start_path:
        from toolkit.lora_io.files import load_lora

        start = load_lora(start_path, arch=adapter.arch, adapter=adapter)
        try:
            network.load_state_dict(start.state_dict())
        except EaselError as err:
            raise EaselError(f"network.pretrained_lora_path {start_path}: {err}") from None
        log.info(f"Starting from {start_path} ({start.format} format).")
    if config.network.type == "locon" and config.network.conv is None:
        log.warning("warning: network.type locon without network.conv trains no 3x3 convolutions (the same as lora); set conv.")
    return network
