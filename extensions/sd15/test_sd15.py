"""SD 1.x adapter: the shared suite, single-file and pickle checkpoints, v-prediction."""

from pathlib import Path
from typing import Any

import pytest
import torch

from extensions.sd15.adapter import SD15Adapter
from toolkit.testing.adapter_suite import AdapterSuite
from toolkit.config.blocks import ModelConfig
from toolkit.errors import EaselError
from toolkit.models.loading import load_adapter
from toolkit.models.tiny import cache_dir
from families.unet.ldm import sd_pipeline_to_ldm


class TestSD15(AdapterSuite):
    arch = "sd15"
    latent_channels = 4
    sampler = "euler_a"
    single_file = True

    def test_alias_and_conditioning(self, adapter: SD15Adapter, registry: Any) -> None:
        assert registry.arch("sd1").spec.name == "sd15"
        cond = adapter.encode_prompts(["a cat"])
        assert set(cond) == {"prompt_embeds"} and cond["prompt_embeds"].shape == (1, 77, 32)

    def test_pickle_checkpoint_loads_with_allow_pickle(self, adapter: SD15Adapter, registry: Any, tmp_path: Path) -> None:
        checkpoint = tmp_path / "tiny.ckpt"
        torch.save({"state_dict": sd_pipeline_to_ldm(adapter.pipeline()), "global_step": 3}, checkpoint)
        folder = cache_dir("tiny") / "sd15"
        config = ModelConfig(name_or_path=str(checkpoint), arch="sd15", allow_pickle=True, model_kwargs={"config": str(folder)})
        loaded = load_adapter(config, registry, device="cpu")
        expected = adapter.denoiser.state_dict()
        assert all(torch.equal(value, expected[key]) for key, value in loaded.denoiser.state_dict().items())

    def test_unsafe_pickle_is_refused_even_when_allowed(self, registry: Any, tmp_path: Path) -> None:
        checkpoint = tmp_path / "evil.ckpt"
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": Path("x")}, checkpoint)
        config = ModelConfig(name_or_path=str(checkpoint), arch="sd15", allow_pickle=True)
        with pytest.raises(EaselError, match="weights_only"):
            load_adapter(config, registry, device="cpu")

    def test_v_prediction_from_config(self, registry: Any) -> None:
        config = ModelConfig(name_or_path="tiny:sd15", arch="sd15", prediction_type="v_prediction")
        adapter = load_adapter(config, registry, device="cpu")
        assert adapter.noise_schedule().prediction_type == "v_prediction"
        assert adapter.pipeline().scheduler.config.prediction_type == "v_prediction"
