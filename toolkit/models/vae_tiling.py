"""Tiled VAE encoding and decoding (``model.vae_tiling``).

The VAE then works on overlapping tiles of ``model.vae_tile_size`` pixels, so its activations at 1024 px and
above are those of one tile. That is most of a generation's peak after the denoiser: the FLUX.1 VAE's decoder
holds 128-channel full-resolution maps. A quarter of each tile overlaps its neighbours and is blended linearly,
so the seams do not show. Each tile normalises its own activations, so the image differs slightly from one decoded
whole; latents encoded with tiling get their own cache (see ``ModelAdapter.identity``).

diffusers' VAEs carry the tiled code and name its settings in one of two ways; both are set here, so one tile size
means the same on every architecture. Images no larger than a tile are encoded and decoded whole, as without tiling.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError

if TYPE_CHECKING:
    from toolkit.config.blocks import ModelConfig

OVERLAP = 0.25
"""The part of a tile shared with its neighbour (diffusers' default overlap)."""


def scale_factor(vae: Any) -> int:
    """Pixels per latent along each side (8 for the SD, SDXL, FLUX.1 and Qwen-Image VAEs)."""
    ratio = getattr(vae, "spatial_compression_ratio", None)
    if isinstance(ratio, int):
        return ratio
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _style(vae: Any) -> str:
    """How ``vae`` names its tile settings: 'square' (AutoencoderKL, FLUX.2), 'sides' (Qwen-Image, video VAEs)."""
    has_blocks = hasattr(getattr(vae, "config", None), "block_out_channels")
    if hasattr(vae, "tile_latent_min_size") and has_blocks:
        return "square"
    if hasattr(vae, "tile_sample_min_height") and hasattr(vae, "tile_sample_stride_height"):
        return "sides"
    raise EaselError(f"model.vae_tiling: this architecture's VAE ({type(vae).__name__}) has no tiled encoding "
                     "and decoding; remove vae_tiling (or lower the resolution to save memory).")


def configure(vae: Any, config: "ModelConfig") -> None:
    """Switch ``vae``'s tiling on or off as ``config`` says (a VAE shared by two adapters follows the last one)."""
    if not config.vae_tiling:
        if hasattr(vae, "use_tiling"):
            vae.use_tiling = False
        return
    enable(vae, config.vae_tile_size)


def enable(vae: Any, tile_size: int) -> None:
    """Tile ``vae``'s encoding and decoding in squares of ``tile_size`` pixels that overlap by ``OVERLAP``."""
    style = _style(vae)
    factor = scale_factor(vae)
    stride = int(tile_size * (1 - OVERLAP)) // factor * factor
    if tile_size % factor or stride < factor:
        raise EaselError(f"model.vae_tile_size: {tile_size} px does not split into this VAE's latents "
                         f"({factor} px each); use a multiple of {factor}, at least {2 * factor} "
                         "(512 keeps the seams far apart).")
    if style == "square":
        vae.tile_sample_min_size = tile_size
        vae.tile_latent_min_size = tile_size // factor
        vae.tile_overlap_factor = OVERLAP
    else:
        vae.tile_sample_min_height = vae.tile_sample_min_width = tile_size
        vae.tile_sample_stride_height = vae.tile_sample_stride_width = stride
    vae.use_tiling = True


def tiling_tag(vae: Any) -> str:
    """A cache-key part naming the tile size when ``vae`` tiles (empty when it does not, keeping older keys)."""
    if not getattr(vae, "use_tiling", False):
        return ""
    size = getattr(vae, "tile_sample_min_size", None) or getattr(vae, "tile_sample_min_height", None)
    return f"|tiled{size}"
