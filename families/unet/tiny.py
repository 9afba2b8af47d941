"""What the UNet family's tiny models share: the SD training schedule's config, and tiny random ControlNets and
IP-Adapters built for a tiny model (its ``ArchSpec.controlnet.tiny`` / ``ip_adapter.tiny``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def scheduler_config() -> dict[str, Any]:
    """The scaled-linear DDPM schedule of SD 1.x and SDXL (epsilon prediction)."""
    return {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False, "prediction_type": "epsilon"}


CONTROLNET_FILE = "tiny_controlnet.safetensors"
"""The plain tiny ControlNet again as a single file in the original layout (as lllyasviel's ``control_*.safetensors``)."""


def build_controlnet(base_folder: Path, folder: Path, seed: int = 0, union: bool = False) -> None:
    """A tiny random ControlNet (``ControlNetUnionModel`` when ``union``) for the tiny UNet in ``base_folder``, made as
    diffusers makes one (a copy of the UNet's encoder), written as a diffusers folder; a plain one also as the single
    file ``CONTROLNET_FILE``."""
    import torch
    from diffusers import ControlNetModel, ControlNetUnionModel, UNet2DConditionModel
    from safetensors.torch import save_file

    from families.unet.ldm import controlnet_to_ldm

    from toolkit.testing.tiny import randomize_zero_layers

    unet = UNet2DConditionModel.from_pretrained(base_folder / "unet")
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8, 8, 16))
    if union:  # its control-type transformer works at the first block's width
        width = unet.config.block_out_channels[0]
        controlnet = ControlNetUnionModel.from_config({**controlnet.config, "num_trans_channel": width, "num_trans_head": 2,
                                                       "num_proj_channel": width})
    randomize_zero_layers(controlnet, seed)
    controlnet.save_pretrained(folder, safe_serialization=True)
    if not union:
        hint_blocks = len(controlnet.controlnet_cond_embedding.blocks)
        state = controlnet_to_ldm(controlnet.state_dict(), controlnet.config, hint_blocks)
        save_file({key: value.contiguous() for key, value in state.items()}, str(folder / CONTROLNET_FILE))


def build_ip_adapter(base_folder: Path, folder: Path, seed: int = 0) -> None:
    """A tiny random IP-Adapter for the tiny UNet in ``base_folder`` in the layout diffusers' ``load_ip_adapter``
    reads: ``ip-adapter.safetensors`` (``image_proj.*``: the image embedding -> 4 tokens; ``ip_adapter.<n>.to_k_ip /
    to_v_ip``: per cross-attention layer, numbered 1, 3, 5, ...) and a tiny CLIP vision encoder in ``image_encoder/``."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = UNet2DConditionModel.load_config(base_folder / "unet")
    torch.manual_seed(seed)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4, image_size=32, patch_size=8,
        projection_dim=16)).eval()
    encoder.save_pretrained(folder / "image_encoder")
    cross, embed = config["cross_attention_dim"], 16
    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * 0.3

    state = {"image_proj.proj.weight": random(4 * cross, embed), "image_proj.proj.bias": random(4 * cross),
             "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    widths = list(config["block_out_channels"])
    names = list(UNet2DConditionModel.from_config(config).attn_processors)
    for index, name in enumerate(n for n in names if n.endswith("attn2.processor")):
        block = name.split(".")[0]
        hidden = widths[-1] if block == "mid_block" else \
            (widths[::-1] if block == "up_blocks" else widths)[int(name.split(".")[1])]
        for kind in ("to_k_ip", "to_v_ip"):
            state[f"ip_adapter.{2 * index + 1}.{kind}.weight"] = random(hidden, cross)
    save_file(state, str(folder / "ip-adapter.safetensors"))
