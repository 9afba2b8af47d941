"""Per-file naming context: which component a key prefix means and how module names are spelled.

A ``Namer`` combines an architecture's ``LoraProfile`` (and its denoiser's name) with, when there is one,
the loaded model, whose module names make the way back from flattened names exact. Where other tools name
the denoiser's modules their own way (the UNet family's SGM names), the profile's ``denoiser_names`` says how.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError
from toolkit.lora_io.naming import flatten, module_index, unflatten
from toolkit.registry import LoraProfile

if TYPE_CHECKING:
    import torch

    from toolkit.models.base import ModelAdapter
    from toolkit.registry import ArchSpec

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
    denoiser_component: str = "unet"
    """The denoiser's component name (the ArchSpec's ``denoiser``) when no model is given."""
    profile_layout: bool = False
    """Read the denoiser names with the profile's layout even with a model (files easel wrote before it followed the
    model's own layout)."""
    _indexes: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, spec: "ArchSpec | None", arch: str | None = None, adapter: "ModelAdapter | None" = None,
           lenient: bool = False) -> "Namer":
        """The naming of architecture ``spec`` (``arch``: its name with the variant); None: an unknown one."""
        if spec is None:
            return cls(arch, LoraProfile(), adapter, lenient)
        return cls(arch or spec.name, spec.lora or LoraProfile(), adapter, lenient, spec.denoiser)

    @property
    def denoiser(self) -> str:
        return self.adapter.denoiser_name if self.adapter is not None else self.denoiser_component

    @property
    def layout(self) -> Any:
        """What the profile's ``denoiser_names`` read: the loaded denoiser's config, else the profile's layout;
        None when the architecture's files use diffusers' own names."""
        if self.profile.denoiser_names is None:
            return None
        loaded = getattr(self.adapter.denoiser, "config", None) if self.adapter is not None and not self.profile_layout else None
        return loaded if loaded is not None else (self.profile.denoiser_layout or None)

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

    def renames(self, component: str) -> bool:
        """Whether other tools name this component's modules their own way (``LoraProfile.denoiser_names``)."""
        return component == self.denoiser and self.layout is not None

    def external_name(self, component: str, name: str, *, file_names: bool) -> str:
        """A module path as other tools' files spell it: the profile's denoiser names (when ``file_names``, e.g.
        SGM names for a UNet), file prefixes added."""
        if file_names and self.renames(component):
            return self.profile.denoiser_names.to_file(name, self.layout)  # type: ignore[union-attr]
        prefix = self.profile.file_prefixes.get(component)
        if prefix and not name.startswith(prefix + "."):
            return f"{prefix}.{name}"
        return name

    def internal_name(self, component: str, name: str) -> str:
        """A dotted module path from a file -> the loaded module's path (SGM names mapped back, file prefixes removed)."""
        names = self.profile.denoiser_names
        if component == self.denoiser and names is not None and names.recognises(name):
            try:
                return names.from_file(name, self.layout)
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
                return self.external_name(component, name, file_names=True)

            self._indexes[component] = module_index(module, rename) if module is not None else {}
        return self._indexes[component]

    def to_flat(self, component: str, name: str, *, file_names: bool) -> str:
        return flatten(self.external_name(component, name, file_names=file_names))
