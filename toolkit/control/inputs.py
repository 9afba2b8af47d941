"""From config blocks to generation inputs, for the jobs that generate (generate, training previews, evaluate).

- which control image each ControlNet reads (a file, a folder paired by file name, or the init image itself) and
  the check that it lines up with the image it steers (same aspect ratio);
- the checks a dry run can make before any model loads: the architecture takes ControlNets (how many, with a
  guidance window, which union modes), each ControlNet's config.json fits it, a depth / pose model can be found;
- the control image preprocessed at the output size (``ControlInput``), the IP-Adapter's reference images
  (``IPAdapterInput``), and the A1111-style metadata entries of both.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from PIL import Image

    from toolkit.config.blocks import ModelConfig
    from toolkit.config.control import ControlNetConfig, IPAdapterConfig
    from toolkit.models.base import ControlInput, IPAdapterInput
    from toolkit.registry import ArchSpec

ASPECT_TOLERANCE = 0.01
"""Relative difference of two aspect ratios (width / height) under which two images line up."""
Problems = list[tuple[tuple, str]]
"""(YAML path below the list, message) pairs, as a config's ``check`` reports them."""


def image_files(source: str) -> list[Path]:
    """The images ``source`` names: one file, or a folder's images sorted by name; ValueError when there are none."""
    from toolkit.data.images import IMAGE_EXTENSIONS

    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if found:
            return found
        raise ValueError(f"the folder '{source}' holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    raise ValueError(f"'{source}' is not an image file or a folder")


def paired(source: str, stem: str) -> Path:
    """The image of ``source`` (a file, or a folder paired by file name) that goes with the image named ``stem``."""
    files = image_files(source)
    if Path(source).expanduser().is_file():
        return files[0]
    for file in files:
        if file.stem == stem:
            return file
    raise ValueError(f"the folder '{source}' has no image named '{stem}' (images are paired by file name; "
                     f"found {', '.join(f.name for f in files[:8])}{', ...' if len(files) > 8 else ''})")


def aspect_problem(image: Path, size: tuple[int, int], reference: Path, reference_size: tuple[int, int]) -> str | None:
    """Why ``image`` (``size``) cannot steer an image shaped like ``reference``; None when their aspect ratios agree."""
    ours, theirs = size[0] / size[1], reference_size[0] / reference_size[1]
    if abs(ours - theirs) <= ASPECT_TOLERANCE * theirs:
        return None
    return (f"the control image '{image.name}' is {size[0]}x{size[1]} (aspect {ours:.2f}) but '{reference.name}', whose shape "
            f"the output takes, is {reference_size[0]}x{reference_size[1]} (aspect {theirs:.2f}), so the structure would not "
            "line up; crop one of them to the other's aspect ratio")


def mode_index(mode: int | str | None, spec: "ArchSpec") -> int | None:
    """A union ControlNet's mode by name or index -> its index; ValueError for a name the architecture does not know."""
    if mode is None or isinstance(mode, int):
        return mode
    modes = spec.controlnet.union_modes if spec.controlnet is not None else {}
    if mode not in modes:
        from toolkit.config.messages import suggest

        known = ", ".join(modes) or "(none: it has no union ControlNets)"
        raise ValueError(f"mode '{mode}' is not a control mode of '{spec.name}' union ControlNets"
                         f"{suggest(mode, list(modes)) or '.'} Valid: {known}")
    return modes[mode]


def controlnet_problems(configs: "list[ControlNetConfig]", spec: "ArchSpec", specs: Iterable["ArchSpec"],
                        model: "ModelConfig") -> Problems:
    """What a dry run can tell about ``configs`` for architecture ``spec``: capacity, modes, each ControlNet's
    config.json (where readable without downloading), the base model's denoiser config, preprocessor models."""
    from toolkit.control.estimators import model_problem
    from toolkit.errors import EaselError
    from toolkit.models import controlnets
    from toolkit.models.base import ControlNetSource

    profile = spec.controlnet
    if not configs:
        return []
    if profile is None:
        return [((), f"architecture '{spec.name}' takes no ControlNets")]
    problems: Problems = []
    if profile.max_models and len(configs) > profile.max_models:
        problems.append(((), f"'{spec.name}' takes at most {profile.max_models} ControlNet(s) per image, got {len(configs)}"))
    denoiser = controlnets.denoiser_config(model, spec)
    specs = list(specs)
    for index, config in enumerate(configs):
        if not profile.guidance_window and (config.start, config.end) != (0.0, 1.0):
            problems.append(((index, "start"), f"'{spec.name}' ControlNets act on every step; remove start and end"))
        try:
            mode_index(config.mode, spec)
            found = controlnets.read_config(ControlNetSource(config.path, config.config))
        except (ValueError, EaselError) as err:
            problems.append(((index, "mode" if isinstance(err, ValueError) else "path"), str(err).rstrip(".")))
            continue
        problem = None if found is None else controlnets.fit_problem(found, spec)
        if problem is None and found is not None and denoiser is not None:
            problem = controlnets.shared_problem(found, denoiser, profile)
        if not problem and found is not None and config.mode is not None and found.get("_class_name") != profile.union_model:
            problems.append(((index, "mode"), f"'{config.path}' is not a union ControlNet; it takes no mode"))
        if problem:
            fits = [name for name in controlnets.fitting_archs(found or {}, specs) if name != spec.name]
            problems.append(((index, "path"), f"'{config.path}' does not fit architecture '{spec.name}': {problem}"
                             + (f"; it is a ControlNet for {', '.join(fits)}" if fits else "")))
        if config.preprocess.model and (missing := model_problem(config.preprocess.type, config.preprocess.model, hub=False)):
            problems.append(((index, "preprocess", "model"), missing))
    return problems


def preprocessor_problems(configs: "list[ControlNetConfig]") -> Problems:
    """Depth / pose models that cannot be had now (not on disk, or not in the hub cache while offline): what a job
    checks when it plans its images, before any model loads."""
    from toolkit.control.estimators import model_problem

    return [((index, "preprocess", "model"), missing) for index, config in enumerate(configs)
            if config.preprocess.model and (missing := model_problem(config.preprocess.type, config.preprocess.model))]


def ip_adapter_problems(config: "IPAdapterConfig | None", spec: "ArchSpec") -> Problems:
    """What config validation can tell about an IP-Adapter block: the architecture takes one, its weights file is a
    .safetensors file that exists (or a hub file)."""
    if config is None:
        return []
    if spec.ip_adapter is None:
        return [((), f"architecture '{spec.name}' takes no IP-Adapters")]
    problems: Problems = []
    path = Path(config.path).expanduser()
    if not config.path.lower().endswith(".safetensors"):
        problems.append((("path",), f"'{config.path}' is not a .safetensors file; IP-Adapters are read as .safetensors "
                                    "(pickle .bin files can run code when loaded)"))
    elif not path.is_file() and (path.is_absolute() or config.path.startswith((".", "~")) or config.path.count("/") < 2):
        from toolkit.models.attachments import ip_adapter_not_found

        problems.append((("path",), ip_adapter_not_found(config.path).rstrip(".")))
    return problems


def ip_image_problems(config: "IPAdapterConfig") -> Problems:
    """Reference images of an IP-Adapter block that cannot be found (checked when the job plans its images)."""
    problems: Problems = []
    for index, source in enumerate([config.images] if isinstance(config.images, str) else config.images):
        try:
            image_files(source)
        except ValueError as err:
            problems.append((("images",) if isinstance(config.images, str) else ("images", index), str(err)))
    return problems


def ip_image_files(config: "IPAdapterConfig") -> list[Path]:
    """The IP-Adapter's reference image files, in order."""
    sources = [config.images] if isinstance(config.images, str) else config.images
    return [file for source in sources for file in image_files(source)]


@functools.lru_cache(maxsize=16)
def _prepared(path: str, settings: str, size: tuple[int, int]) -> "Image.Image":
    """A control image: the file at ``size`` (as img2img fits its input), then preprocessed (cached: an image usually
    steers several prompts and seeds)."""
    from PIL import Image

    from toolkit.config.control import PreprocessConfig
    from toolkit.control.preprocess import apply
    from toolkit.data.images import load_image

    image = load_image(Path(path))
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return apply(image, PreprocessConfig.model_validate_json(settings))


def control_input(config: "ControlNetConfig", image: Path, size: tuple[int, int], spec: "ArchSpec") -> "ControlInput":
    """The ``ControlInput`` of one ControlNet for an image of ``size`` steered by the control image file ``image``."""
    from toolkit.models.base import ControlInput, ControlNetSource

    settings = config.preprocess.model_dump_json()
    return ControlInput(ControlNetSource(config.path, config.config), _prepared(str(image), settings, size),
                        f"{image}|{settings}|{size}", scale=config.scale, start=config.start, end=config.end,
                        mode=mode_index(config.mode, spec), kind=config.preprocess.type)


def ip_adapter_input(config: "IPAdapterConfig") -> "IPAdapterInput":
    """The ``IPAdapterInput`` of an IP-Adapter block (its reference images decoded)."""
    from toolkit.data.images import load_image
    from toolkit.models.base import IPAdapterInput

    files = ip_image_files(config)
    return IPAdapterInput(config.path, config.image_encoder, tuple(load_image(file) for file in files),
                          "|".join(map(str, files)), config.scale)


def controlnet_metadata(config: "ControlNetConfig", image: Path) -> str:
    """A ControlNet's entry in the A1111 ``parameters`` text, as A1111's ControlNet extension words it."""
    from toolkit.sampling.pngmeta import model_label

    pre = config.preprocess
    parts = [f"Module: {pre.type}", f"Model: {model_label(config.path)}", f"Weight: {config.scale:g}", f"Image: {image.name}",
             f"Guidance Start: {config.start:g}", f"Guidance End: {config.end:g}"]
    if pre.type == "canny":
        parts += [f"Threshold A: {pre.low_threshold}", f"Threshold B: {pre.high_threshold}"]
    if pre.model:
        parts.append(f"Processor Model: {pre.model}")
    if config.mode is not None:
        parts.append(f"Control Mode: {config.mode}")
    return ", ".join(parts)


def ip_adapter_metadata(config: "IPAdapterConfig") -> str:
    """The IP-Adapter's entry in the A1111 ``parameters`` text."""
    from toolkit.sampling.pngmeta import model_label

    images = "; ".join(file.name for file in ip_image_files(config))
    return f"Model: {model_label(config.path)}, Weight: {config.scale:g}, Images: {images}"


def metadata(controls: "list[tuple[ControlNetConfig, Path]]", ip_adapter: "IPAdapterConfig | None") -> dict[str, Any]:
    """``parameters`` entries (``ControlNet 0``, ``ControlNet 1``, ..., ``IP-Adapter``) of an image's controls."""
    entries: dict[str, Any] = {f"ControlNet {i}": controlnet_metadata(config, image) for i, (config, image) in enumerate(controls)}
    if ip_adapter is not None:
        entries["IP-Adapter"] = ip_adapter_metadata(ip_adapter)
    return entries


def mismatch(files: list[Path], reference: Path | None = None) -> str | None:
    """Why ``files`` (control images of one image) cannot steer an image shaped like ``reference`` (else like the first
    of them); None when all have its aspect ratio. Missing files are named too."""
    from toolkit.data.images import displayed_size

    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        return f"the control image(s) {', '.join(missing)} do not exist"
    shape_of = reference or files[0]
    shape = displayed_size(shape_of)
    for file in files:
        problem = aspect_problem(file, displayed_size(file), shape_of, shape)
        if problem:
            return problem
    return None


def controls_for(configs: "list[ControlNetConfig]", images: list[str], size: tuple[int, int], spec: "ArchSpec",
                 reference: Path | None = None) -> "tuple[tuple[ControlInput, ...], tuple[int, int]]":
    """The ``ControlInput`` of each ControlNet reading the matching file of ``images``, and the image's size: the aspect
    ratio of ``reference`` (an init image), else of the first control image, at the area of ``size`` (sides rounded to
    the architecture's multiple). A control image of another aspect ratio is an error."""
    from toolkit.data.images import displayed_size
    from toolkit.errors import EaselError
    from toolkit.sampling.lookup import fit_aspect

    files = [Path(image).expanduser() for image in images]
    problem = mismatch(files, reference)
    if problem:
        raise EaselError(f"controlnets: {problem}.")
    out = fit_aspect(displayed_size(reference or files[0]), size[0] * size[1], spec.bucket_divisibility)
    return tuple(control_input(config, file, out, spec) for config, file in zip(configs, files)), out
