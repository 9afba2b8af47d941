"""LoRA files as other tools write them, for the tiny models.

Made by the tools' own code where they run here: diffusers' example trainers (peft adapter ->
``get_peft_model_state_dict`` -> ``convert_state_dict_to_diffusers`` -> ``save_lora_weights``), peft's
``save_pretrained`` and LyCORIS' ``save_weights``. Tools that cannot run here (kohya sd-scripts, ai-toolkit,
OneTrainer, SimpleTuner, Civitai uploads) are written from their key lists: ``written_file`` takes the keys
as those tools spell them and fills in tensors shaped for the tiny model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

RANK = 4


def _randomize(module: torch.nn.Module, seed: int, scale: float = 0.3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


def diffusers_trainer_file(pipe: Any, folder: Path, targets: dict[str, list[str]], seed: int = 0) -> Path:
    """What diffusers' train_text_to_image_lora / train_dreambooth_lora(_sdxl) save for ``targets`` ({component:
    module names}): ``pytorch_lora_weights.safetensors`` with ``<component>.<module>.lora.down.weight`` keys."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    layers = {}
    for index, (component, modules) in enumerate(targets.items()):
        module = copy.deepcopy(getattr(pipe, component))
        module.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian", target_modules=modules))
        _randomize(module, seed + index)
        layers[f"{component}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(module))
    type(pipe).save_lora_weights(save_directory=str(folder), safe_serialization=True, **layers)
    return folder / "pytorch_lora_weights.safetensors"


def peft_folder(model: torch.nn.Module, folder: Path, modules: list[str], alpha: float, seed: int = 0) -> Any:
    """peft's ``save_pretrained`` of a LoRA on ``model`` (a copy): adapter_model.safetensors + adapter_config.json.
    Returns the peft model (for its forward)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=RANK, lora_alpha=alpha, target_modules=modules))
    _randomize(peft_model, seed)
    peft_model.save_pretrained(str(folder))
    return peft_model


def lycoris_file(model: torch.nn.Module, path: Path, algo: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """LyCORIS' own ``save_weights`` of a network on ``model`` (a copy), ``lycoris_`` keys."""
    from lycoris import create_lycoris

    network = create_lycoris(copy.deepcopy(model), 1.0, linear_dim=RANK, linear_alpha=2.0, algo=algo)
    network.apply_to()
    _randomize(network, seed)
    with torch.no_grad():
        for name, param in network.named_parameters():
            if name.endswith(("lokr_w1", "lokr_w2")):
                param.copy_(torch.randn_like(param) * 0.3)
    network.save_weights(str(path), torch.float32, None)
    state = {k: v for k, v in network.state_dict().items()}
    network.restore()
    return state


def layer_of(components: dict[str, torch.nn.Module], component: str, path: str) -> torch.nn.Module:
    """The layer a key names (text encoder paths with or without ``text_model.``)."""
    module = components[component]
    for candidate in (path, path.removeprefix("text_model.")):
        try:
            return module.get_submodule(candidate)
        except AttributeError:
            continue
    raise KeyError(f"{component} has no layer {path}")


def _lora_tensors(layer: torch.nn.Module, style: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A LoRA / LoHa / LoKr module's tensors for a linear or conv layer, in the naming ``style``."""
    out_f, in_f = layer.weight.shape[:2]
    kernel = tuple(layer.weight.shape[2:])
    if style == "hada":
        names = {"hada_w1_a": (out_f, RANK), "hada_w1_b": (RANK, in_f * int(torch.tensor(kernel).prod())),
                 "hada_w2_a": (out_f, RANK), "hada_w2_b": (RANK, in_f * int(torch.tensor(kernel).prod()))}
        return {**{k: torch.randn(s, generator=generator) * 0.3 for k, s in names.items()}, "alpha": torch.tensor(2.0)}
    if style == "lokr":
        tensors = {"lokr_w1": torch.randn(2, 2, generator=generator) * 0.3, "alpha": torch.tensor(2.0)}
        if RANK >= max(out_f, in_f) // 4:  # LyCORIS keeps small second factors whole
            return {**tensors, "lokr_w2": torch.randn(out_f // 2, in_f // 2, generator=generator) * 0.3}
        return {**tensors, "lokr_w2_a": torch.randn(out_f // 2, RANK, generator=generator) * 0.3,
                "lokr_w2_b": torch.randn(RANK, in_f // 2, generator=generator) * 0.3}
    down = torch.randn(RANK, in_f, *kernel, generator=generator) * 0.3
    up = torch.randn(out_f, RANK, *([1] * len(kernel)), generator=generator) * 0.3
    if style == "peft":
        return {"lora_A.weight": down, "lora_B.weight": up}
    return {"lora_down.weight": down, "lora_up.weight": up, "alpha": torch.tensor(float(RANK) / 2)}


def written_file(path: Path, components: dict[str, torch.nn.Module], entries: list[tuple[str, str, str]],
                 style: str = "kohya", seed: int = 0) -> Path:
    """A file from a tool's key list: ``entries`` are (key prefix as the tool writes it, component, module path
    the key names) and ``style`` the tensor suffixes (kohya: lora_down/lora_up/alpha; peft: lora_A/lora_B, no alpha;
    hada / lokr: LyCORIS' LoHa / LoKr tensors with alpha)."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for key, component, module in entries:
        for suffix, value in _lora_tensors(layer_of(components, component, module), style, generator).items():
            tensors[f"{key}.{suffix}"] = value.contiguous()
    save_file(tensors, str(path))
    return path
