"""What a ``PipelineAdapter`` attaches to its pipeline for a generation: ControlNets (loaded once each), the diffusers
pipelines built around them (``from_pipe``: sharing the adapter's components), and an IP-Adapter.

The classes come from the architecture's ``ArchSpec`` (``controlnet`` / ``ip_adapter`` profiles); nothing here names
one. An IP-Adapter changes the denoiser's attention processors, so it is unloaded again as soon as a request comes
without one (training's own denoiser calls never see it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import EaselError
from toolkit.log import log
from toolkit.models import controlnets
from toolkit.models.hub import local_files_only, not_found_text
from toolkit.models.loading import diffusers_class, hub_errors, resolve_file

if TYPE_CHECKING:
    from toolkit.models.base import ControlNetSource, IPAdapterInput
    from toolkit.registry import ControlNetProfile


class Attachments:
    """The ControlNets, derived pipelines and IP-Adapter of one adapter."""

    def __init__(self, adapter: Any):
        self.adapter = adapter
        """The ``PipelineAdapter`` they belong to."""
        self.nets: dict["ControlNetSource", Any] = {}
        self.pipelines: dict[tuple, Any] = {}
        self.ip_adapter: tuple[str, str | None] | None = None
        """(weights, image encoder) of the IP-Adapter loaded now."""

    @property
    def profile(self) -> "ControlNetProfile":
        spec = self.adapter.arch.spec
        if spec.controlnet is None:
            raise EaselError(f"architecture '{spec.name}' takes no ControlNets (controlnets: is for "
                             "architectures whose spec declares them).")
        return spec.controlnet

    def controlnet(self, source: "ControlNetSource") -> Any:
        """The ControlNet of ``source`` on the adapter's device, loaded the first time; checked against the denoiser."""
        if source not in self.nets:
            adapter = self.adapter
            log.info(f"Loading the ControlNet {source.path}")
            net = controlnets.load(source, adapter.arch.spec, adapter.denoiser.config, adapter.dtype)
            self.nets[source] = net.to(adapter.device).eval().requires_grad_(False)
        return self.nets[source]

    def pipeline(self, class_name: str, nets: tuple[Any, ...] = ()) -> Any:
        """The diffusers pipeline ``class_name`` sharing the adapter's components (with ``nets`` as its ControlNet)."""
        key = (class_name, tuple(id(net) for net in nets))
        if key not in self.pipelines:
            from diffusers.utils import logging as diffusers_logging

            extra = {"controlnet": nets[0] if len(nets) == 1 else list(nets)} if nets else {}
            level = diffusers_logging.get_verbosity()
            diffusers_logging.set_verbosity_error()
            try:
                pipe = diffusers_class(class_name).from_pipe(self.adapter.pipe, dtype=self.adapter.dtype, **extra)
            finally:
                diffusers_logging.set_verbosity(level)
            pipe.set_progress_bar_config(disable=True)
            if len(nets) > 1:  # it warns on every call that the control images serve every prompt, as they do here
                logging.getLogger(type(pipe).__module__).addFilter(_quiet_multi_controlnet)
            self.pipelines[key] = pipe
        return self.pipelines[key]

    def set_ip_adapter(self, wanted: "IPAdapterInput | None") -> None:
        """Load the IP-Adapter ``wanted`` (unloading another), or unload it when None; then set its scale."""
        pipe = self.adapter.pipe
        key = None if wanted is None else (wanted.path, wanted.image_encoder)
        if key != self.ip_adapter and self.ip_adapter is not None:
            pipe.unload_ip_adapter()
            self.ip_adapter = None
            self.pipelines.clear()  # they hold the old image encoder
        if wanted is None:
            return
        if self.ip_adapter is None:
            if self.adapter.arch.spec.ip_adapter is None:
                raise EaselError(f"architecture '{self.adapter.arch.spec.name}' takes no IP-Adapters.")
            _load_ip_adapter(pipe, wanted, self.adapter)
            self.ip_adapter = key
            self.pipelines.clear()
        pipe.set_ip_adapter_scale(wanted.scale)


def _quiet_multi_controlnet(record: logging.LogRecord) -> bool:
    return "ControlNets and you have passed" not in record.getMessage()


def ip_adapter_not_found(path: str) -> str:
    """The not-found paragraph (``toolkit.models.hub``) of an IP-Adapter weights file, without its key."""
    return not_found_text("ip_adapter.path", path, local_kind=".safetensors file (or a hub file like "
                          "h94/IP-Adapter/models/ip-adapter_sd15.safetensors)", hub_files=True, label="the IP-Adapter")


def _load_ip_adapter(pipe: Any, wanted: "IPAdapterInput", adapter: Any) -> None:
    """diffusers' ``load_ip_adapter`` for a local or hub weights file, with the image encoder beside it or the one given."""
    log.info(f"Loading the IP-Adapter {wanted.path}")
    if not wanted.path.lower().endswith(".safetensors"):
        raise EaselError(f"ip_adapter.path: '{wanted.path}' is not a .safetensors file (pickle files can run code when loaded).")
    file = Path(wanted.path).expanduser()
    if file.is_file():
        root, subfolder, weight = str(file.parent), "", file.name
    else:
        parts = wanted.path.split("/")
        if len(parts) < 3:
            raise EaselError(f"ip_adapter.path: {ip_adapter_not_found(wanted.path)}")
        resolve_file(wanted.path, "ip_adapter.path")  # a clear error when it cannot be had
        root, subfolder, weight = "/".join(parts[:2]), "/".join(parts[2:-1]), parts[-1]
    encoder_folder: str | None = "image_encoder"
    if wanted.image_encoder:
        pipe.register_modules(image_encoder=_image_encoder(wanted.image_encoder, adapter))
        encoder_folder = None
    with hub_errors("ip_adapter", wanted.path):
        pipe.load_ip_adapter(root, subfolder=subfolder, weight_name=weight, image_encoder_folder=encoder_folder,
                             local_files_only=local_files_only(root))
    pipe.image_encoder.to(adapter.device).requires_grad_(False)


def _image_encoder(where: str, adapter: Any) -> Any:
    """A CLIP image encoder from a folder, a hub id, or ``owner/repo/subfolder``."""
    from transformers import CLIPVisionModelWithProjection

    local = Path(where).expanduser()
    with hub_errors("ip_adapter.image_encoder", where):
        if local.is_dir():
            return CLIPVisionModelWithProjection.from_pretrained(str(local), dtype=adapter.dtype)
        parts = where.split("/")
        return CLIPVisionModelWithProjection.from_pretrained("/".join(parts[:2]), subfolder="/".join(parts[2:]) or None,
                                                             dtype=adapter.dtype, local_files_only=local_files_only(None))
