"""What the UNet family's tiny models share: the SD training schedule's config."""

from __future__ import annotations

from typing import Any


def scheduler_config() -> dict[str, Any]:
    """The scaled-linear DDPM schedule of SD 1.x and SDXL (epsilon prediction)."""
    return {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False, "prediction_type": "epsilon"}
