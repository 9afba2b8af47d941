"""Models that are not found: one paragraph saying what was tried, whether the machine is offline, how to fix it;
offline is found once (HF_HUB_OFFLINE or one failed connection) and nothing then waits on the network."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Iterator

import pytest

from toolkit.config.blocks import ModelConfig
from toolkit.errors import EaselError
from toolkit.models import hub
from toolkit.models.loading import hub_errors, resolve_source


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """HF_HUB_OFFLINE unset and the hub endpoint a closed local port (a real refused connection); yields the attempts."""
    from huggingface_hub import constants

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempts: list[tuple[str, int]] = []
    connect = socket.create_connection

    def counting(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        attempts.append(address)
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(hub.socket, "create_connection", counting)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    hub._unreachable.cache_clear()
    yield attempts
    hub._unreachable.cache_clear()


def _source(name: str, registry: Any) -> Any:
    config = ModelConfig(name_or_path=name, arch="sd15")
    return resolve_source(config, registry.arch(config.arch))


def test_hub_id_not_cached_offline_says_what_was_tried_and_how_to_fix_it(registry: Any) -> None:
    with pytest.raises(EaselError) as caught:
        _source("easel-test/not-a-model", registry)
    text = str(caught.value)
    assert text.startswith("model.name_or_path: cannot load 'easel-test/not-a-model'. Tried it as a local path (")
    assert "and as a Hugging Face hub id (not in the hub cache" in text
    assert "This machine is offline: HF_HUB_OFFLINE is set." in text
    assert "`hf download easel-test/not-a-model`" in text and "HF_HOME" in text
    assert "local diffusers folder or .safetensors checkpoint" in text and "stacktrace" not in text and "\n" not in text
    assert text.endswith("To try the job offline first, model.name_or_path: tiny:sd15 is a tiny random model built in code.")


def test_a_name_that_is_no_hub_id_is_not_called_one(registry: Any) -> None:
    with pytest.raises(EaselError, match="hub id \\(it is not one: those look like owner/name\\)") as caught:
        _source("no_such_model_file", registry)
    assert "machine is offline" not in str(caught.value) and "hf download" not in str(caught.value)


def test_unreachable_hub_is_found_once_and_named(unreachable: list[tuple[str, int]], registry: Any) -> None:
    for _ in range(2):
        with pytest.raises(EaselError, match=r"This machine is offline: 127\.0\.0\.1:\d+ cannot be reached \(Connection refused\)"):
            _source("easel-test/not-a-model", registry)
    assert len(unreachable) == 1, "the connection is tried once per process"


def test_captioner_fails_fast_offline_without_asking_transformers(unreachable: list[tuple[str, int]],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The caption job used to wait through five 'Retrying in 8s' lines: now nothing reaches the network code."""
    import torch
    import transformers

    from toolkit.prep.captioner import load_captioning_model

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("from_pretrained was called although the hub cannot be reached")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_download)
    with pytest.raises(EaselError) as caught:
        load_captioning_model("Salesforce/blip-image-captioning-large", device=torch.device("cpu"), dtype=torch.float32)
    text = str(caught.value)
    assert text.startswith("model: cannot load the captioning model 'Salesforce/blip-image-captioning-large'. Tried it as a local path")
    assert "cannot be reached" in text and "`hf download Salesforce/blip-image-captioning-large`" in text
    assert "folder saved with save_pretrained" in text and "model: tiny:blip is a tiny random model" in text


def test_cached_hub_id_loads_from_the_cache_only_when_offline(unreachable: list[tuple[str, int]],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "in_hub_cache", lambda *args, **kwargs: True)
    assert hub.pretrained_location("openai/clip-vit-large-patch14", "clip_model", "the CLIP model") == \
        ("openai/clip-vit-large-patch14", {"local_files_only": True})


def test_tiny_names_build_transformers_models_once() -> None:
    folder, options = hub.pretrained_location("tiny:clip", "clip_model", "the CLIP model")
    assert options == {} and (Path(folder) / "config.json").is_file()
    built = (Path(folder) / "easel_tiny.json").stat().st_mtime_ns
    assert hub.pretrained_location("TINY:clip", "clip_model", "the CLIP model")[0] == folder
    assert (Path(folder) / "easel_tiny.json").stat().st_mtime_ns == built, "a fresh cache is not rebuilt"
    with pytest.raises(EaselError, match="no tiny model 'tiny:blip3'; the tiny transformers models are tiny:blip, tiny:blip2"):
        hub.pretrained_location("tiny:blip3", "model", "the captioning model")


def test_library_errors_lose_the_pointer_to_a_hidden_traceback() -> None:
    """diffusers ends with 'check out the root cause in the stacktrace above', which easel does not print: quote the cause."""
    try:
        try:
            raise ConnectionError("[Errno -2] Name or service not known")
        except ConnectionError as inner:
            raise OSError(f"Cannot load model x/y: an error occurred while fetching metadata. {hub.STACKTRACE_NOTE}") from inner
    except OSError as err:
        text = hub.library_message(err)
    assert text == ("Cannot load model x/y: an error occurred while fetching metadata. "
                    "(root cause: ConnectionError: [Errno -2] Name or service not known)")


def test_hub_answer_is_quoted_when_online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "offline_reason", lambda: None)
    with pytest.raises(EaselError) as caught:
        with hub_errors("model.name_or_path", "easel-test/gated"):
            raise OSError(f"easel-test/gated is not a valid model identifier. {hub.STACKTRACE_NOTE}")
    text = str(caught.value)
    assert "hub id (the hub said: easel-test/gated is not a valid model identifier.)" in text
    assert "machine is offline" not in text and "stacktrace" not in text
