"""``tiny:<name>``: tiny random models built in code (no download), once, and cached under ``output/.tiny/<name>/``.

The one place a ``tiny:`` name becomes a folder. Two kinds of model answer to one:

- ``model.name_or_path: tiny:<arch>`` (``tiny:sd15``, ``tiny:zimage``, ...): a denoiser pipeline built by the
  architecture's own builder, its ``ArchSpec.tiny`` (``extensions/<arch>/tiny.py``), found through the registry;
- ``tiny:blip``, ``tiny:blip2``, ``tiny:florence2``, ``tiny:git``, ``tiny:vit_gpt2``, ``tiny:clip`` wherever a
  captioning or CLIP model is asked for: transformers models that are not architectures, built by
  ``toolkit.testing.tiny_transformers``.

Both are built from a fixed seed by ``tiny_folder``, which rebuilds a cached model whose builder changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from toolkit.errors import EaselError
from toolkit.log import log

if TYPE_CHECKING:
    from toolkit.registry import ArchRef

TINY_PREFIX = "tiny:"
TINY_SEED = 1234


def tiny_name(name: str) -> str | None:
    """What follows ``tiny:`` in ``name`` (any case), or None when ``name`` is no tiny name."""
    name = name.strip()
    return name[len(TINY_PREFIX):] if name.lower().startswith(TINY_PREFIX) else None


def cache_dir(kind: str) -> Path:
    """``$EASEL_CACHE_DIR/.<kind>`` (default ``output/.<kind>``): tiny models, converted checkpoints."""
    return Path(os.environ.get("EASEL_CACHE_DIR", "output")) / f".{kind}"


def arch_tiny_folder(name: str, arch: "ArchRef") -> Path:
    """The folder of ``tiny:<name>`` for ``model.name_or_path``; ``name`` must be ``arch`` (or one of its aliases)."""
    wanted = name.strip().lower().partition(":")[0]
    if wanted not in (arch.spec.name, *arch.spec.aliases):
        raise EaselError(f"model.name_or_path: 'tiny:{name}' is a tiny '{wanted}' model but model.arch is '{arch.name}'; "
                         f"use 'tiny:{arch.spec.name}'.")
    return tiny_folder(arch.spec.name, tiny_builder(arch))


def tiny_builder(arch: "ArchRef") -> Callable[[Path, int], None]:
    """The function that writes ``arch``'s tiny model (its ``ArchSpec.tiny``), imported only now."""
    from toolkit.registry import load_object

    if arch.spec.tiny is None:
        raise EaselError(f"architecture '{arch.spec.name}' has no tiny built-in model.")
    return load_object(arch.spec.tiny.builder)


def transformers_tiny_folder(name: str, what: str) -> Path:
    """The folder of the tiny transformers model ``tiny:<name>`` given at config key ``what`` (built on first use)."""
    from toolkit.testing.tiny_transformers import BUILDERS

    key = name.strip().lower()
    if key not in BUILDERS:
        raise EaselError(f"{what}: there is no tiny model 'tiny:{name}'; the tiny transformers models are "
                         f"{', '.join('tiny:' + known for known in BUILDERS)}.")
    return tiny_folder(key, BUILDERS[key])


def _tiny_stamp(builder: Callable[[Path, int], None]) -> dict[str, Any]:
    """What a cached tiny model was built by: the builder and a hash of its folder (the architecture's) and of
    toolkit/testing (the shared pieces and fitted weights). Any change to either rebuilds the cache."""
    import sys

    import toolkit.testing

    digest = hashlib.sha1()
    module_file = getattr(sys.modules.get(builder.__module__), "__file__", None)
    packages = [Path(toolkit.testing.__file__).parent] + ([Path(module_file).parent] if module_file else [])
    for package in packages:
        for path in sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(path.relative_to(package).as_posix().encode() + path.read_bytes())
    return {"builder": f"{builder.__module__}:{builder.__qualname__}", "source": digest.hexdigest()[:16], "seed": TINY_SEED}


def tiny_folder(name: str, builder: Callable[[Path, int], None]) -> Path:
    """The cached tiny model ``name``; built (atomically, from a fixed seed) when missing or out of date.

    A lock file serialises builders, so several processes can ask at once. Under torch.distributed only rank 0 builds
    and the others wait for it: transformers' ``save_pretrained`` writes its files on rank 0 only.
    """
    folder = cache_dir("tiny") / name
    marker, stamp = folder / "easel_tiny.json", _tiny_stamp(builder)
    if _fresh(marker, stamp):
        return folder
    if _distributed_rank() > 0:
        return _wait_until_fresh(folder, marker, stamp)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(folder.parent / f".{name}.lock"):
        if _fresh(marker, stamp):
            return folder
        temp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=folder.parent))
        try:
            builder(temp, TINY_SEED)
            (temp / "easel_tiny.json").write_text(json.dumps(stamp), encoding="utf-8")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(temp, folder)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
    log.info(f"Built the tiny '{name}' model in {folder}")
    return folder


def _fresh(marker: Path, stamp: dict[str, Any]) -> bool:
    return marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == stamp


def _distributed_rank() -> int:
    """This process's rank in an initialised torch.distributed group; 0 without one."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _wait_until_fresh(folder: Path, marker: Path, stamp: dict[str, Any], timeout: float = 1800.0) -> Path:
    """Wait for rank 0 to build the tiny model (the folder swap is atomic, so a fresh marker means a whole folder)."""
    import time

    deadline = time.monotonic() + timeout
    while not _fresh(marker, stamp):
        if time.monotonic() > deadline:
            raise EaselError(f"waited {timeout:.0f} s for rank 0 to build the tiny model in {folder}; it did not finish.")
        time.sleep(0.2)
    return folder


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (POSIX flock; elsewhere no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: one process at a time is the user's business
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
