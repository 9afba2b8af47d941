"""The image easel makes with ControlNets and IP-Adapters equals diffusers' own pipeline's image with the same inputs:
tiny random ControlNets / IP-Adapters saved to disk, loaded by easel's loading code and by diffusers'
``from_pretrained`` / ``from_single_file`` / ``load_ip_adapter``; img2img, several ControlNets, union ControlNets
with a control mode, and a LoRA on top."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import diffusers
import numpy as np
import pytest
import torch

from tests.control.conftest import shapes
from toolkit.errors import EaselError
from toolkit.lora_io import apply_loras, remove_loras
from toolkit.models.base import ControlInput, ControlNetSource, GenerateRequest, IPAdapterInput
from toolkit.sampling.samplers import make_scheduler

STEPS, SEED, GUIDANCE = 3, 11, 3.0
CONTROL_ARG = {"sd15": "image", "sdxl": "image", "zimage": "control_image"}
"""How each architecture's diffusers txt2img ControlNet pipeline names the control image."""


def _request(adapter: Any, **fields: Any) -> GenerateRequest:
    settings = dict(prompt="a house by a lake", width=64, height=64, steps=STEPS, guidance_scale=GUIDANCE, seed=SEED,
                    sampler=adapter.arch.spec.default_sampler)
    return GenerateRequest(**(settings | fields))


def _control(folder: Path | str, scale: float = 1.0, mode: int | None = None, image: Any = None, **source: Any) -> ControlInput:
    return ControlInput(ControlNetSource(str(folder), **source), image or shapes(), "shapes", scale=scale, mode=mode)


def _easel(adapter: Any, **fields: Any) -> np.ndarray:
    return np.asarray(adapter.generate([_request(adapter, **fields)])[0], dtype=np.float32)


@pytest.fixture(scope="module")
def reference(base: Callable[[str], Path], registry: Any) -> Callable[[str], Any]:
    """The tiny model of an architecture as diffusers loads it (``from_pretrained`` of its folder), once per module."""
    loaded: dict[str, Any] = {}

    def get(arch: str) -> Any:
        if arch not in loaded:
            loaded[arch] = getattr(diffusers, registry.arch(arch).spec.pipeline).from_pretrained(str(base(arch)))
        return loaded[arch]

    return get


def _diffusers(adapter: Any, pipeline: str, reference: Any, *, controlnet: Any = None, **call: Any) -> np.ndarray:
    """diffusers' ``pipeline`` around the components diffusers loaded (with ``controlnet``), called as easel would."""
    extra = {"controlnet": controlnet} if controlnet is not None else {}
    pipe = getattr(diffusers, pipeline).from_pipe(reference, **extra)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = make_scheduler(adapter.arch.spec.default_sampler, pipe.scheduler.config, **adapter.scheduler_overrides())
    request = _request(adapter)
    extra = {k: v for k, v in adapter.call_kwargs([request]).items() if k in inspect.signature(type(pipe).__call__).parameters}
    out = pipe(prompt=[request.prompt], negative_prompt=[""], num_inference_steps=STEPS, height=64, width=64,
               guidance_scale=adapter.pipeline_guidance(GUIDANCE), generator=[torch.Generator().manual_seed(SEED)],
               **extra, **call)
    return np.asarray(out.images[0], dtype=np.float32)


def _net(registry: Any, arch: str, folder: Path) -> Any:
    return getattr(diffusers, registry.arch(arch).spec.controlnet.model).from_pretrained(str(folder))


@pytest.mark.parametrize("arch", ["sd15", "sdxl", "zimage"])
def test_controlnet_txt2img_is_diffusers_image(arch: str, adapters: Any, registry: Any, reference: Callable, controlnet: Callable) -> None:
    adapter, folder = adapters[arch], controlnet(arch)
    ours = _easel(adapter, controls=(_control(folder, scale=0.9),))
    assert np.abs(ours - _easel(adapter)).mean() > 2, "the ControlNet changes the image"
    theirs = _diffusers(adapter, registry.arch(arch).spec.controlnet.txt2img, reference(arch), controlnet=_net(registry, arch, folder),
                        controlnet_conditioning_scale=0.9, **{CONTROL_ARG[arch]: shapes()})
    assert np.abs(ours - theirs).max() <= 1


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_controlnet_img2img_is_diffusers_image(arch: str, adapters: Any, registry: Any, reference: Callable, controlnet: Callable) -> None:
    adapter, folder = adapters[arch], controlnet(arch)
    init = shapes().transpose(0)  # another picture than the control image
    ours = _easel(adapter, init_image=init, strength=0.7, controls=(_control(folder),))
    theirs = _diffusers(adapter, registry.arch(arch).spec.controlnet.img2img, reference(arch), controlnet=_net(registry, arch, folder),
                        image=[init], control_image=shapes(), strength=0.7, controlnet_conditioning_scale=1.0)
    assert np.abs(ours - theirs).max() <= 1


def test_zimage_controlnet_img2img_starts_where_diffusers_img2img_does(adapters: Any, reference: Callable, controlnet: Callable) -> None:
    """diffusers has no Z-Image ControlNet img2img pipeline: easel's (the ControlNet pipeline started from the noised
    init latents) gives ZImageImg2ImgPipeline's image when the ControlNet's scale is 0, and a steered one above."""
    adapter, folder = adapters["zimage"], controlnet("zimage")
    init = shapes().transpose(0)
    unsteered = _easel(adapter, init_image=init, strength=0.6, controls=(_control(folder, scale=0.0),))
    theirs = _diffusers(adapter, "ZImageImg2ImgPipeline", reference("zimage"), image=[init], strength=0.6)
    assert np.abs(unsteered - theirs).max() <= 1
    steered = _easel(adapter, init_image=init, strength=0.6, controls=(_control(folder),))
    assert np.abs(steered - theirs).mean() > 2


def test_zimage_single_file_controlnet_loads_like_its_folder(adapters: Any, controlnet: Callable) -> None:
    from extensions.z_image.tiny import CONTROLNET_FILE

    adapter, folder = adapters["zimage"], controlnet("zimage")
    from_file = _control(folder / CONTROLNET_FILE, config=str(folder))
    assert np.array_equal(_easel(adapter, controls=(from_file,)), _easel(adapter, controls=(_control(folder),)))


def test_sd15_single_file_controlnet_in_the_original_layout_loads_like_its_folder(adapters: Any, controlnet: Callable) -> None:
    """A ``control_model.*`` single file (lllyasviel's ``control_v11p_sd15_*.safetensors`` layout), read through diffusers'
    ``from_single_file``, gives the folder's image."""
    from families.unet.tiny import CONTROLNET_FILE

    adapter, folder = adapters["sd15"], controlnet("sd15")
    from_file = _control(folder / CONTROLNET_FILE, config=str(folder))
    assert np.array_equal(_easel(adapter, controls=(from_file,)), _easel(adapter, controls=(_control(folder),)))


def test_an_sdxl_single_file_diffusers_cannot_fully_convert_is_a_clear_error(adapters: Any, controlnet: Callable) -> None:
    from families.unet.tiny import CONTROLNET_FILE

    adapter, folder = adapters["sdxl"], controlnet("sdxl")
    with pytest.raises(EaselError, match=r"lacks weights ControlNetModel needs .* Use the ControlNet's diffusers folder"):
        _easel(adapter, controls=(_control(folder / CONTROLNET_FILE, config=str(folder)),))


def test_several_controlnets_with_windows_are_diffusers_multi_controlnet(adapters: Any, registry: Any, reference: Callable,
                                                                         controlnet: Callable) -> None:
    adapter, first, second = adapters["sd15"], controlnet("sd15"), controlnet("sd15", seed=4)
    edges = shapes().convert("L").point(lambda v: 255 if v < 128 else 0).convert("RGB")
    controls = (_control(first, scale=0.7), ControlInput(ControlNetSource(str(second)), edges, "edges", scale=1.2, start=0.2, end=0.8))
    ours = _easel(adapter, controls=controls)
    nets = [_net(registry, "sd15", first), _net(registry, "sd15", second)]
    theirs = _diffusers(adapter, "StableDiffusionControlNetPipeline", reference("sd15"), controlnet=nets, image=[shapes(), edges],
                        controlnet_conditioning_scale=[0.7, 1.2], control_guidance_start=[0.0, 0.2], control_guidance_end=[1.0, 0.8])
    assert np.abs(ours - theirs).max() <= 1
    assert np.abs(ours - _easel(adapter, controls=controls[:1])).mean() > 1, "the second ControlNet counts"


@pytest.mark.parametrize("img2img", [False, True], ids=["txt2img", "img2img"])
def test_sdxl_union_controlnet_with_its_mode_is_diffusers_image(img2img: bool, adapters: Any, reference: Callable, controlnet: Callable) -> None:
    adapter, folder = adapters["sdxl"], controlnet("sdxl", union=True)
    init = {"init_image": shapes().transpose(0), "strength": 0.7} if img2img else {}
    ours = _easel(adapter, controls=(_control(folder, mode=3),), **init)
    assert np.abs(ours - _easel(adapter, controls=(_control(folder, mode=1),), **init)).mean() > 0.5, "the mode counts"
    net = diffusers.ControlNetUnionModel.from_pretrained(str(folder))
    pipeline = "StableDiffusionXLControlNetUnionImg2ImgPipeline" if img2img else "StableDiffusionXLControlNetUnionPipeline"
    extra = {"image": [init["init_image"]], "strength": 0.7} if img2img else {}
    theirs = _diffusers(adapter, pipeline, reference("sdxl"), controlnet=net, control_image=[shapes()], control_mode=[3],
                        controlnet_conditioning_scale=1.0, **extra)
    assert np.abs(ours - theirs).max() <= 1


def test_union_controlnet_needs_a_mode_and_plain_ones_take_none(adapters: Any, controlnet: Callable) -> None:
    adapter = adapters["sdxl"]
    with pytest.raises(EaselError, match="is a union ControlNet and preprocess 'none' names no control mode"):
        adapter.generate([_request(adapter, controls=(_control(controlnet("sdxl", union=True)),))])
    with pytest.raises(EaselError, match="is not a union ControlNet; it takes no mode"):
        adapter.generate([_request(adapter, controls=(_control(controlnet("sdxl"), mode=3),))])


def test_controlnet_of_another_architecture_is_refused_before_its_weights_load(adapters: Any, controlnet: Callable) -> None:
    with pytest.raises(EaselError, match=r"does not fit this sd15 model: its config has addition_embed_type 'text_time'"):
        _easel(adapters["sd15"], controls=(_control(controlnet("sdxl")),))
    with pytest.raises(EaselError, match="it is a ZImageControlNetModel, and 'sdxl' takes ControlNetModel or ControlNetUnionModel"):
        _easel(adapters["sdxl"], controls=(_control(controlnet("zimage")),))


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_ip_adapter_is_diffusers_load_ip_adapter(arch: str, adapters: Any, reference: Callable, ip_adapter: Callable,
                                                  sd15_lora: Path) -> None:
    """With a LoRA applied too (sd15); the IP-Adapter is unloaded again for a request without one."""
    adapter, folder = adapters[arch], ip_adapter(arch)
    image = shapes().rotate(90)
    ip = IPAdapterInput(str(folder / "ip-adapter.safetensors"), None, (image,), "ref", scale=0.8)
    loras = [(sd15_lora, 0.7)] if arch == "sd15" else []
    apply_loras(adapter, loras)
    try:
        plain, ours = _easel(adapter), _easel(adapter, ip_adapter=ip)
        assert np.array_equal(_easel(adapter), plain), "a request without an IP-Adapter unloads it"
    finally:
        remove_loras(adapter)
    assert np.abs(ours - plain).mean() > 1
    pipe = reference(arch)
    if loras:
        pipe.load_lora_weights(str(sd15_lora), adapter_name="style")
        pipe.set_adapters(["style"], [0.7])
    pipe.load_ip_adapter(str(folder), subfolder="", weight_name="ip-adapter.safetensors")
    pipe.set_ip_adapter_scale(0.8)
    try:
        theirs = _diffusers(adapter, adapter.arch.spec.pipeline, pipe, ip_adapter_image=[[image]])
    finally:
        pipe.unload_ip_adapter()
        if loras:
            pipe.delete_adapters(["style"])
    assert np.abs(ours - theirs).max() <= 1


@pytest.fixture(scope="module")
def sd15_lora(adapters: Any, tmp_path_factory: Any) -> Path:
    """A random LoRA for the tiny SD 1.5 UNet, written by diffusers."""
    from toolkit.testing.tiny import save_random_lora

    adapter = adapters["sd15"]
    return save_random_lora(adapter.pipeline(), tmp_path_factory.mktemp("lora") / "style.safetensors",
                            adapter.lora_targets(False), seed=2)
