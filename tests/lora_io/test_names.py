"""Module names: SGM <-> diffusers UNet names (checked against diffusers' own single-file conversion),
flattened kohya names back to paths, and guessing the architecture."""

import pytest
import torch

from families.unet import sgm
from toolkit.lora_io.naming import flatten, unflatten
from toolkit.lora_io.namer import Namer
from toolkit.lora_io.profiles import guess_arch

from tests.lora_io.conftest import ARCHS

from tests.conftest import ROOT
from toolkit.registry import Registry

SPECS = {spec.name: spec for spec in Registry.discover(("jobs",), ROOT / "extensions").archs.values()}


def _weighted(module: torch.nn.Module) -> list[str]:
    return [n for n, m in module.named_modules() if n and getattr(m, "weight", None) is not None]


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_sgm_names_match_diffusers_single_file_conversion(arch, adapters):
    """Every UNet parameter renamed by ``to_sgm`` is converted back to itself by diffusers' LDM loader."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    unet = adapters[arch].denoiser
    state = unet.state_dict()
    ldm = {}
    for key, value in state.items():
        module, _, param = key.rpartition(".")
        ldm[f"model.diffusion_model.{sgm.to_sgm(module, unet.config)}.{param}"] = value
    back = convert_ldm_unet_checkpoint(ldm, dict(unet.config))
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_sgm_names_invert(arch, adapters):
    unet = adapters[arch].denoiser
    names = _weighted(unet)
    mapped = [sgm.to_sgm(n, unet.config) for n in names]
    assert len(set(mapped)) == len(names)
    assert all(sgm.is_sgm(m) for m in mapped)
    assert [sgm.from_sgm(m, unet.config) for m in mapped] == names


@pytest.mark.parametrize("arch", ARCHS)
def test_flattened_names_split_back_without_a_model(arch, adapters):
    """The vocabulary turns every flattened module name of the tiny models back into its path, SGM names too."""
    adapter = adapters[arch]
    namer = Namer.of(SPECS[arch])
    for component, module in adapter.components().items():
        for name in _weighted(module):
            external = namer.external_name(component, name, file_names=True)
            assert unflatten(flatten(external), SPECS[arch].lora.module_words) == external
            assert namer.from_flat(component, flatten(external)) == name


@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_guessed_from_kohya_and_diffusers_key_names(arch, adapters, registry):
    from toolkit.lora_io.formats import write_diffusers, write_kohya
    from toolkit.lora_io.keys import group_modules

    from tests.lora_io.helpers import random_lora

    adapter = adapters[arch]
    modules = group_modules(random_lora(adapter.components(), adapter.lora_targets(arch != "zimage"), rank=2))
    namer = Namer.of(SPECS[arch])
    for keys in (list(write_kohya(modules, namer)), list(write_diffusers(modules)[0])):
        assert guess_arch(keys, {}, registry) == arch


def test_guess_prefers_metadata_and_gives_up_when_unclear(registry):
    assert guess_arch(["lora_unet_x.lora_down.weight"], {"ss_base_model_version": "sdxl_base_v1-0"}, registry) == "sdxl"
    assert guess_arch(["x.lora_A.weight"], {"modelspec.architecture": "stable-diffusion-v1/lora"}, registry) == "sd15"
    assert guess_arch(["unet.up_blocks.1.attentions.0.proj_in.lora_A.weight"], {}, registry) is None
