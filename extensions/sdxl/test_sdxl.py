"""SDXL adapter: the shared suite, pooled embeddings and size/crop micro-conditioning."""

from typing import Any

import torch

from extensions.sdxl.adapter import SDXLAdapter
from toolkit.testing.adapter_suite import AdapterSuite
from toolkit.models.base import ImageInfo


class TestSDXL(AdapterSuite):
    arch = "sdxl"
    latent_channels = 4
    sampler = "euler_a"

    def test_two_encoders_and_pooled_embeds(self, adapter: SDXLAdapter) -> None:
        cond = adapter.encode_prompts(["a cat", "a dog"])
        assert set(cond) == {"prompt_embeds", "pooled_prompt_embeds"}
        assert cond["prompt_embeds"].shape == (2, 77, 64) and cond["pooled_prompt_embeds"].shape == (2, 32)
        assert set(adapter.text_encoders) == {"text_encoder", "text_encoder_2"}

    def test_time_ids_follow_image_info(self, adapter: SDXLAdapter) -> None:
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        info = ImageInfo(original_size=(512, 384), crop_top_left=(16, 0), target_size=(64, 64))
        assert adapter.time_ids(latents, [info]).tolist() == [[512, 384, 16, 0, 64, 64]]
        assert adapter.time_ids(latents, None).tolist() == [[64, 64, 0, 0, 64, 64]]
        with torch.no_grad():
            cond = adapter.encode_prompts(["a cat"])
            default = adapter.predict(latents, torch.tensor([500]), cond)
            cropped = adapter.predict(latents, torch.tensor([500]), cond, [info])
        assert not torch.allclose(default, cropped)

    def test_second_prompt_reaches_the_second_encoder(self, adapter: SDXLAdapter) -> None:
        base = adapter.generate([self.request()])[0]
        other = adapter.generate([self.request(extras={"prompt_2": "a blue car"})])[0]
        assert base.tobytes() != other.tobytes()

    def test_legacy_is_xl_flag(self, registry: Any) -> None:
        assert registry.legacy_arch_flags()["is_xl"] == "sdxl"
