"""Models that come from the Hugging Face hub or a local folder: is the hub usable, and the one error when a model is not found.

A name is tried as a local path first, then (when it looks like ``owner/name``) as a hub id. Whether
the hub can be used is decided once per process: ``HF_HUB_OFFLINE`` set, or one short TCP connection
to the hub (or to the HTTPS proxy) that fails, means offline. Offline, a hub id loads only from the
local cache (``local_files_only``), so the libraries never spend their retries on a dead network, and
one that is not cached is an error saying what was tried and how to get the model.
``tiny:<name>`` names a tiny random transformers model built in code (``toolkit.models.tiny``).
"""

from __future__ import annotations

import functools
import socket
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from toolkit.errors import EaselError
from toolkit.models.tiny import tiny_name, transformers_tiny_folder

PROBE_TIMEOUT_S = 3.0
"""How long the one connection attempt to the hub may take."""
STACKTRACE_NOTE = "Please check out the root cause in the stacktrace above."
"""diffusers' pointer to a traceback that easel does not print; the root cause is quoted instead."""


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` tells the Hugging Face libraries not to contact the hub."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@functools.lru_cache(maxsize=1)
def _unreachable() -> str | None:
    """Why the hub cannot be reached, from one TCP connection (to the HTTPS proxy when one is set); None when it can."""
    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    if proxy and urllib.request.proxy_bypass(endpoint.hostname or ""):
        proxy = None
    target = urlsplit(proxy if "://" in (proxy or "") else f"http://{proxy}") if proxy else endpoint
    host = target.hostname or "huggingface.co"
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as err:
        return f"{host}:{port} cannot be reached ({err.strerror or err})"


def offline_reason() -> str | None:
    """Why the hub is not used (``HF_HUB_OFFLINE``, or no connection), or None when it is."""
    return "HF_HUB_OFFLINE is set" if hub_offline() else _unreachable()


def local_files_only(name: str | None) -> bool:
    """Whether a library loading ``name`` (a hub id, a local folder, or None for a default on the hub) must keep to
    the hub cache: the hub is not used (``offline_reason``) and ``name`` is no local folder."""
    return not (name and Path(name).expanduser().is_dir()) and offline_reason() is not None


def looks_like_hub_id(name: str) -> bool:
    """``owner/name``: one slash, not a path that starts like one (``./``, ``/``, ``~``)."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and all(name.split("/"))


def hub_cached_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """The local copy of ``filename`` of ``repo_id`` when it is in the hub cache (nothing is downloaded), else None."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        found = try_to_load_from_cache(repo_id, filename, revision=revision)
    except HFValidationError:
        return None
    return Path(found) if isinstance(found, str) else None


def in_hub_cache(repo_id: str, filename: str, revision: str | None = None) -> bool:
    """Whether ``filename`` of ``repo_id`` is in the local hub cache."""
    return hub_cached_file(repo_id, filename, revision) is not None


def library_message(err: BaseException) -> str:
    """The library's first line without its pointer to a traceback, and the root cause it points at."""
    text = str(err).splitlines()[0].replace(STACKTRACE_NOTE, "").strip() if str(err) else type(err).__name__
    root, seen = err, {id(err)}
    while (root.__cause__ or root.__context__) is not None and id(root.__cause__ or root.__context__) not in seen:
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
        seen.add(id(root))
    if root is not err and str(root) and str(root).splitlines()[0] not in text:
        text += f" (root cause: {type(root).__name__}: {str(root).splitlines()[0]})"
    return text


def hub_parts(name: str, files: bool = False) -> tuple[str, str | None] | None:
    """(repo id, file in it) of ``owner/name`` or, with ``files``, ``owner/name/path/in/repo.ext``; None for other names."""
    if looks_like_hub_id(name):
        return name, None
    parts = name.split("/")
    if files and len(parts) >= 3 and looks_like_hub_id("/".join(parts[:2])) and all(parts):
        return "/".join(parts[:2]), "/".join(parts[2:])
    return None


def model_not_found(what: str, name: str, *, local_kind: str, cause: BaseException | None = None,
                    hub_files: bool = False, label: str = "", tiny: str = "") -> EaselError:
    """One paragraph: what ``name`` was tried as (local path, hub id or hub file), whether the machine is offline, how to fix it.

    Its arguments are ``not_found_text``'s; the paragraph starts with ``what``.
    """
    text = not_found_text(what, name, local_kind=local_kind, cause=cause, hub_files=hub_files, label=label, tiny=tiny)
    return EaselError(f"{what}: {text}")


def not_found_text(what: str, name: str, *, local_kind: str, cause: BaseException | None = None,
                   hub_files: bool = False, label: str = "", tiny: str = "") -> str:
    """``model_not_found``'s paragraph without the leading ``what:`` (a config issue names its YAML path itself).

    Args:
        what: the config key, e.g. ``model.name_or_path``.
        name: the value given.
        local_kind: what a local path must be, e.g. "diffusers folder or .safetensors checkpoint".
        cause: the library's error, when the hub was asked.
        hub_files: ``owner/name/file.safetensors`` is a hub file here (single-file checkpoints, LoRAs).
        label: what the model is for, e.g. "the CLIP model".
        tiny: a ``tiny:`` name that tries the same job offline.
    """
    from huggingface_hub import constants

    tried = [f"a local path ('{Path(name).expanduser().absolute()}' does not exist)"]
    hub = hub_parts(name, hub_files)
    reason = offline_reason() if hub else None
    if hub:
        state = f"not in the hub cache {constants.HF_HUB_CACHE}" if reason or cause is None else f"the hub said: {library_message(cause)}"
        tried.append(f"a Hugging Face hub {'file' if hub[1] else 'id'} ({state})")
    else:
        tried.append("a Hugging Face hub id (it is not one: those look like owner/name)")
    text = f"cannot load {label + ' ' if label else ''}'{name}'. Tried it as {' and as '.join(tried)}."
    if reason:
        text += f" This machine is offline: {reason}."
    if hub:
        command = " ".join(part for part in ("hf download", *hub) if part)
        text += (f" To fix it, download it where there is internet (`{command}`; `huggingface-cli download` with "
                 f"huggingface_hub before 0.34) and copy the hub cache here, or set HF_HOME to a folder whose hub/ holds "
                 f"it (HF_HOME is now {constants.HF_HOME}); or point {what} at a local {local_kind}.")
    else:
        text += f" Point {what} at an existing local {local_kind}, or give a hub id such as owner/name."
    if tiny:
        text += f" To try the job offline first, {what}: {tiny} is a tiny random model built in code."
    return text


TRANSFORMERS_FOLDER = "folder saved with save_pretrained"


def pretrained_location(name: str, what: str, label: str, revision: str | None = None, tiny: str = "") -> tuple[str, dict[str, Any]]:
    """What a transformers ``from_pretrained`` should load for ``name`` (the value of config key ``what``), and its options.

    ``tiny:<name>`` is built once and its folder returned; a local folder is used as it is; a hub id is
    loaded from the cache only (``local_files_only``) when offline, and is the one clear error when it is
    not cached there (``tiny`` names the tiny model it suggests).
    """
    built = tiny_name(name)
    if built is not None:
        return str(transformers_tiny_folder(built, what)), {}
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path), {}
    if path.exists():
        raise EaselError(f"{what}: '{name}' is a file; {label} must be a {TRANSFORMERS_FOLDER}, a hub id or a tiny: name.")
    if not looks_like_hub_id(name) or (offline_reason() is not None and not in_hub_cache(name, "config.json", revision)):
        raise model_not_found(what, name, local_kind=TRANSFORMERS_FOLDER, label=label, tiny=tiny)
    return name, ({"local_files_only": True} if offline_reason() is not None else {})


def load_error(what: str, label: str, name: str, source: str, err: BaseException, tiny: str = "") -> EaselError:
    """The error for a transformers model that ``from_pretrained`` refused: a broken local folder, or a hub failure."""
    if Path(source).is_dir():
        return EaselError(f"{what}: cannot load {label} '{name}' from {source}: {library_message(err)} "
                          f"A local model must be a {TRANSFORMERS_FOLDER}.")
    return model_not_found(what, name, local_kind=TRANSFORMERS_FOLDER, cause=err, label=label, tiny=tiny)

