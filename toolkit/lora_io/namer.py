"""Per-file naming context: which component a key prefix means and how module names are spelled.

A ``Namer`` combines an architecture's ``LoraProfile`` with, when there is one, the loaded model,
whose module names make the way back from flattened names exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError
from toolkit.lora_io import sgm
from toolkit.lora_io.naming import flatten, module_index, unflatten
from toolkit.registry import LoraProfile

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import ModelAdapter

KOHYA_ALIASES = {"lora_te": "text_encoder", "lora_te1": "text_encoder", "lora_te2": "text_encoder_2"}
"""kohya prefixes every tool agrees on; other prefixes (lora_unet, lora_transformer, lycoris) mean the denoiser."""
KOHYA_PREFIXES = ("lora_unet", "lora_transformer", "lora_te1", "lora_te2", "lora_te", "lycoris")


@dataclass
class Namer:
    """Module naming for one architecture (``arch`` may be None when unknown), optionally with its model."""

    arch: str | None
    profile: LoraProfile
    adapter: "ModelAdapter | None" = None
    lenient: bool = False
    """Without an architecture, read the denoiser's keys as ``unet`` instead of failing (for inspecting)."""
    profile_layout: bool = False
    """Map SGM names with the profile's UNet layout even with a model (files easel wrote before it used the model's)."""
    _indexes: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def denoiser(self) -> str:
        return self.adapter.denoiser_name if self.adapter is not None else self.profile.denoiser

    @property
    def unet_config(self) -> Any:
        """The UNet layout used for SGM names: the loaded model's config, else the profile's; None when not a UNet."""
        if self.profile_layout:
            return self.profile.unet_config or None
        if self.adapter is not None and hasattr(getattr(self.adapter.denoiser, "config", None), "layers_per_block"):
            return self.adapter.denoiser.config
        return self.profile.unet_config or None

    def components(self) -> "dict[str, torch.nn.Module]":
        return self.adapter.components() if self.adapter is not None else {}

    def _need_arch(self, what: str) -> None:
        if self.arch is None and self.adapter is None and not self.lenient:
            raise EaselError(f"cannot tell which architecture this LoRA is for ({what}); set `arch` (sd15, sdxl, zimage, ...).")

    def kohya_component(self, prefix: str) -> str:
        """kohya prefix (``lora_te1``) -> component name."""
        for component, known in self.profile.kohya_prefixes.items():
            if known == prefix:
                return component
        if prefix in KOHYA_ALIASES:
            return KOHYA_ALIASES[prefix]
        self._need_arch(f"its keys start with '{prefix}_'")
        return self.denoiser

    def kohya_prefix(self, component: str) -> str:
        if component in self.profile.kohya_prefixes:
            return self.profile.kohya_prefixes[component]
        raise EaselError(f"the kohya format has no key prefix for component '{component}' of "
                         f"{self.arch or 'this architecture'} (known: {', '.join(self.profile.kohya_prefixes) or 'none'}).")

    def comfy_component(self, key: str) -> tuple[str, str] | None:
        """``(component, rest)`` for a ComfyUI-style key, None when no known prefix starts it."""
        prefixes = sorted(self.profile.comfy_prefixes.items(), key=lambda item: -len(item[1]))
        for component, prefix in prefixes:
            if key.startswith(prefix + "."):
                return component, key[len(prefix) + 1:]
        if key.startswith("diffusion_model."):
            self._need_arch("its keys start with 'diffusion_model.'")
            return self.denoiser, key[len("diffusion_model."):]
        return None

    def comfy_prefix(self, component: str) -> str:
        if component in self.profile.comfy_prefixes:
            return self.profile.comfy_prefixes[component]
        raise EaselError(f"the comfy format has no key prefix for component '{component}' of "
                         f"{self.arch or 'this architecture'} (known: {', '.join(self.profile.comfy_prefixes) or 'none'}).")

    def uses_sgm(self, component: str) -> bool:
        return component == self.denoiser and self.unet_config is not None

    def external_name(self, component: str, name: str, *, sgm_names: bool) -> str:
        """A module path as other tools' files spell it: SGM names for a UNet (when ``sgm_names``), file prefixes added."""
        if sgm_names and self.uses_sgm(component):
            return sgm.to_sgm(name, self.unet_config)
        prefix = self.profile.file_prefixes.get(component)
        if prefix and not name.startswith(prefix + "."):
            return f"{prefix}.{name}"
        return name

    def internal_name(self, component: str, name: str) -> str:
        """A dotted module path from a file -> the loaded module's path (SGM names mapped back, file prefixes removed)."""
        if component == self.denoiser and sgm.is_sgm(name):
            if self.unet_config is None:
                raise EaselError(f"module '{name}' uses SGM UNet names, which {self.arch or 'an unknown architecture'} "
                                 "does not have; check `arch`.")
            try:
                return sgm.from_sgm(name, self.unet_config)
            except (KeyError, IndexError):
                return name
        prefix = self.profile.file_prefixes.get(component)
        if prefix and name.startswith(prefix + "."):
            stripped = name[len(prefix) + 1:]
            known = set(self._index(component).values())
            return name if name in known and stripped not in known else stripped
        return name

    def from_flat(self, component: str, flat: str) -> str:
        """A flattened module name -> its diffusers path (exact with a model, by vocabulary without)."""
        index = self._index(component)
        if flat in index:
            return index[flat]
        return self.internal_name(component, unflatten(flat, self.profile.module_words))

    def _index(self, component: str) -> dict[str, str]:
        """Flattened name (as loaded, and as other tools spell it) -> module path, for the loaded model's component."""
        if component not in self._indexes:
            module = self.components().get(component)

            def rename(name: str) -> str:
                return self.external_name(component, name, sgm_names=True)

            self._indexes[component] = module_index(module, rename) if module is not None else {}
        return self._indexes[component]

    def to_flat(self, component: str, name: str, *, sgm_names: bool) -> str:
        return flatten(self.external_name(component, name, sgm_names=sgm_names))
