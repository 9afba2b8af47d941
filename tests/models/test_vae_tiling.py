"""model.vae_tiling: set from the config at load, kept apart in the latent cache, refused where it cannot work.

What tiling does to every architecture's encoding and decoding is checked by the shared suite
(``AdapterSuite.test_vae_tiling``); this file checks the option as a config reaches it.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from toolkit.config.blocks import ModelConfig
from toolkit.errors import EaselError
from toolkit.models import vae_tiling
from toolkit.models.base import GenerateRequest
from toolkit.models.loading import load_adapter


def _load(registry, arch: str = "sd15", **fields):
    return load_adapter(ModelConfig(name_or_path=f"tiny:{arch}", arch=arch, **fields), registry, device="cpu", dtype="fp32")


def test_config_switches_tiling_on_with_its_tile_size(registry):
    adapter = _load(registry, vae_tiling=True, vae_tile_size=32)
    vae = adapter.vae
    assert vae.use_tiling and vae.tile_sample_min_size == 32 and vae.tile_latent_min_size == 4
    assert vae.tile_overlap_factor == vae_tiling.OVERLAP
    plain = _load(registry)
    assert not plain.vae.use_tiling


def test_tiled_latents_get_their_own_cache(registry):
    tiled = _load(registry, vae_tiling=True, vae_tile_size=32).identity("vae")
    other_size = _load(registry, vae_tiling=True, vae_tile_size=64).identity("vae")
    plain = _load(registry).identity("vae")
    assert len({tiled, other_size, plain}) == 3
    assert "tiled" not in plain, "a run without tiling keeps the cache keys it had before the option existed"


def test_generation_with_tiling_stays_close_to_the_whole_decode(registry):
    request = GenerateRequest(prompt="a watercolor fox", width=96, height=64, steps=2, guidance_scale=1.0, seed=3,
                              sampler="ddpm")
    whole = np.asarray(_load(registry).generate([request])[0], dtype=np.float32)
    tiled = np.asarray(_load(registry, vae_tiling=True, vae_tile_size=32).generate([request])[0], dtype=np.float32)
    assert tiled.shape == whole.shape == (64, 96, 3)
    assert 0 < np.abs(tiled - whole).mean() < 0.3 * whole.std()


def test_tile_size_that_does_not_split_into_latents_is_refused():
    vae = SimpleNamespace(config=SimpleNamespace(block_out_channels=(8, 8, 8, 8, 8)), tile_latent_min_size=2,
                          use_tiling=False)  # 16 px per latent
    with pytest.raises(EaselError, match=r"model.vae_tile_size: 24 px .* multiple of 16"):
        vae_tiling.enable(vae, 24)
    vae_tiling.enable(vae, 32)
    assert vae.use_tiling and vae.tile_latent_min_size == 2


def test_vae_without_tiled_code_is_refused():
    with pytest.raises(EaselError, match=r"model.vae_tiling: .*\(Decoder\) has no tiled"):
        vae_tiling.enable(type("Decoder", (), {"config": SimpleNamespace(block_out_channels=(8, 8))})(), 64)


def test_sides_style_vaes_get_a_stride_of_three_quarters():
    vae = SimpleNamespace(spatial_compression_ratio=8, tile_sample_min_height=256, tile_sample_min_width=256,
                          tile_sample_stride_height=192, tile_sample_stride_width=192, use_tiling=False)
    vae_tiling.enable(vae, 512)
    assert (vae.tile_sample_min_height, vae.tile_sample_min_width) == (512, 512)
    assert (vae.tile_sample_stride_height, vae.tile_sample_stride_width) == (384, 384) and vae.use_tiling
    assert vae_tiling.tiling_tag(vae) == "|tiled512"


def _seam_excess(image: torch.Tensor, whole: torch.Tensor) -> float:
    """How much more neighbouring columns differ than in the whole decode, at the worst column (in median steps)."""
    def steps(picture: torch.Tensor) -> torch.Tensor:
        return (picture[:, :, 1:] - picture[:, :, :-1]).abs().mean(dim=(0, 1))

    return float((steps(image) - steps(whole)).max() / steps(whole).median())


def test_decoded_tiles_blend_without_a_seam(registry):
    """At the tiles' borders neighbouring columns differ about as much as in the whole decode; tiles laid side by
    side without the blended overlap (the control) show their seams by the same measure."""
    adapter = _load(registry)
    latents = torch.randn(1, 4, 8, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = adapter.decode_latents(latents)[0]
        vae_tiling.enable(adapter.vae, 32)
        blended = adapter.decode_latents(latents)[0]
        adapter.vae.tile_overlap_factor = 0.0
        side_by_side = adapter.decode_latents(latents)[0]
    assert _seam_excess(blended, whole) < 2.5 < 4.0 < _seam_excess(side_by_side, whole)
