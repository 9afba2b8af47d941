"""The LoRA trainer process (``job: extension``, ``type: lora_trainer``). The loop lives in toolkit/train/."""

from toolkit.registry import Extension, ProcessSpec

EXTENSION = Extension(
    name="lora_trainer",
    description="Train LoRA / LyCORIS adapters on any registered architecture.",
    processes=(
        ProcessSpec(
            job="extension",
            name="lora_trainer",
            config="toolkit.config.train:LoraTrainerConfig",
            runner="toolkit.train.process:LoraTrainerProcess",
            aliases=("sd_trainer", "diffusion_trainer"),
            description="Train an adapter, sample previews, save .safetensors files.",
        ),
    ),
)
