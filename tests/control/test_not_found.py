"""ControlNets and IP-Adapters that cannot be had say so in the one paragraph every model that is not found gets
(``toolkit.models.hub``): what was tried, that the machine is offline, how to get it; offline, nothing asks the hub."""

from __future__ import annotations

from typing import Any

import pytest

from toolkit.errors import EaselError
from toolkit.models.base import ControlNetSource, IPAdapterInput


@pytest.fixture
def no_hub_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything tries to download (offline, the hub cache is all there is)."""
    import huggingface_hub.file_download as download

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the hub was asked although the machine is offline")

    monkeypatch.setattr(download, "get_hf_file_metadata", refuse)


def test_a_controlnet_hub_id_not_in_the_cache_offline(adapters: Any, no_hub_calls: None) -> None:
    with pytest.raises(EaselError) as caught:
        adapters["sd15"].attachments.controlnet(ControlNetSource("easel-test/no-controlnet"))
    text = str(caught.value)
    assert text.startswith("controlnets[].path: cannot load 'easel-test/no-controlnet'. Tried it as a local path (")
    assert "a Hugging Face hub id (not in the hub cache" in text and "This machine is offline: HF_HUB_OFFLINE is set." in text
    assert "`hf download easel-test/no-controlnet`" in text and "\n" not in text


def test_an_ip_adapter_hub_file_not_in_the_cache_offline(adapters: Any, no_hub_calls: None) -> None:
    wanted = IPAdapterInput("easel-test/ip-adapter/models/ip-adapter_sd15.safetensors", None, ())
    with pytest.raises(EaselError) as caught:
        adapters["sd15"].attachments.set_ip_adapter(wanted)
    text = str(caught.value)
    assert text.startswith("ip_adapter.path: cannot load 'easel-test/ip-adapter/models/ip-adapter_sd15.safetensors'.")
    assert "a Hugging Face hub file (not in the hub cache" in text and "This machine is offline" in text
    assert "`hf download easel-test/ip-adapter models/ip-adapter_sd15.safetensors`" in text


def test_a_controlnet_that_is_no_path_nor_hub_id() -> None:
    from toolkit.models.controlnets import source_kind

    with pytest.raises(EaselError) as caught:
        source_kind("no_such_controlnet")
    text = str(caught.value)
    assert text.startswith("cannot load the ControlNet 'no_such_controlnet'. Tried it as a local path")
    assert "hub id (it is not one: those look like owner/name)" in text and "machine is offline" not in text
    assert "Point controlnets[].path at an existing local diffusers ControlNet folder or .safetensors file" in text
