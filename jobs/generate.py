"""``job: generate``: txt2img and img2img to a folder, with LoRA stacks, inline prompt flags, ControlNets, an
IP-Adapter and A1111 metadata.

The list of images (prompts x inputs x images_per_prompt, with every default, seed, size, LoRA and control image
resolved) is worked out without torch, so ``--dry-run`` shows it, and checks the control images, without loading a
model. An input is an init image (img2img) or, without init images, a ControlNet's control image; each ControlNet's
control image is a file, the image of its folder named as the input, or the init image itself.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from toolkit.config.generate import GenerateProcessConfig
from toolkit.errors import EaselError
from toolkit.job import Job, Process
from toolkit.log import log
from toolkit.paths import under
from toolkit.sampling.lookup import fit_aspect, index_loras, resolve_lora, round_to
from toolkit.sampling.prompts import PromptSpec, numbered_prompts, parse_prompt, read_prompts

if TYPE_CHECKING:
    from PIL import Image

    from toolkit.models.base import ControlInput, GenerateRequest, IPAdapterInput, ModelAdapter
    from toolkit.models.encoder_memo import EncoderMemo

_INDEXED = re.compile(r"^(\d{4,})_")


RELOAD_FREE = ("vae_tiling", "vae_tile_size")
"""Model settings that a loaded adapter takes without loading again (they are left out of the cache key)."""


class AdapterCache:
    """The loaded base model (one at a time), by model settings, device and precision.

    A job makes its own; a long-lived process (the UI's generate worker) passes one to every job it runs, so
    the model stays loaded between jobs.
    """

    def __init__(self) -> None:
        self._adapters: dict[str, ModelAdapter] = {}
        self._compiled: dict[str, str] = {}
        """Compiled models' keys and their torch.compile mode."""
        self._graph_hooks: list[Any] = []
        self._memo: EncoderMemo | None = None
        """The loaded model's text-encoder outputs (it goes with the model)."""
        self.loads = 0
        """How many times a model was loaded."""

    def get(self, key: str, load: Callable[[], "ModelAdapter"], compile: bool = False,
            mode: str = "default") -> "ModelAdapter":
        """The adapter loaded for ``key``; ``compile``: with its denoiser's blocks compiled in ``mode`` (once: a compiled
        model stays compiled, warm, for every later job; one asked for without compiling keeps them too; another mode
        compiles them again)."""
        if key not in self._adapters:
            from toolkit.models.encoder_memo import EncoderMemo

            self.clear()
            self._adapters[key] = load()
            self._memo = EncoderMemo(self._adapters[key], parked=[])
            self.loads += 1
        adapter = self._adapters[key]
        if compile and self._compiled.get(key) != mode:
            self._compile(key, adapter, mode)
        return adapter

    def memo(self, limit_mib: int) -> "EncoderMemo":
        """The text-encoder outputs kept for the loaded model (as long as it stays loaded), ``limit_mib`` at most."""
        if self._memo is None:
            raise RuntimeError("no model is loaded")
        self._memo.set_limit(limit_mib * 2**20)
        return self._memo

    def _compile(self, key: str, adapter: "ModelAdapter", mode: str) -> None:
        from toolkit.models.memory import check_compile, compile_blocks, mark_graph_steps, uses_cuda_graphs

        check_compile(adapter.device)
        count = compile_blocks(adapter.compile_units(), mode=mode)
        for hook in self._graph_hooks:
            hook.remove()
        self._graph_hooks = [mark_graph_steps(adapter.denoiser)] if uses_cuda_graphs(mode, adapter.device) else []
        shown = "" if mode == "default" else f", mode {mode}"
        log.info(f"torch.compile: {count} {adapter.denoiser_name} blocks{shown} (the first image waits while they compile)")
        self._compiled[key] = mode

    def clear(self) -> None:
        self._adapters.clear()
        self._compiled.clear()
        self._memo = None
        self._graph_hooks = []


class GenerateJob(Job):
    """Runs its ``to_folder`` processes in order; processes with the same model share one loaded adapter."""

    def __init__(self, *args: Any, adapters: AdapterCache | None = None, **kwargs: Any):
        """``adapters``: a cache that outlives the job (left loaded at cleanup); default: the job's own."""
        super().__init__(*args, **kwargs)
        self._owns_adapters = adapters is None
        self._adapters = adapters if adapters is not None else AdapterCache()

    def adapter_for(self, process: "ToFolderProcess") -> "ModelAdapter":
        """The adapter of ``process``'s model on its device, loaded once per job (or per cache)."""
        from toolkit.devices import generation_target
        from toolkit.models.loading import load_adapter

        from toolkit.models import vae_tiling

        model = process.config.model
        device, dtype = generation_target(process.config.device, model.dtype)
        key = f"{model.model_dump_json(exclude=set(RELOAD_FREE))}|{device}|{dtype}"
        adapter = self._adapters.get(key, lambda: load_adapter(model, self.registry, device=device, dtype=dtype),
                                     compile=process.config.generate.compile, mode=process.config.generate.compile_mode)
        vae_tiling.configure(adapter.vae, model)  # the loaded model keeps serving when only the tiling changes
        return adapter

    def encoder_memo(self, limit_mib: int) -> "EncoderMemo":
        """The text-encoder outputs kept for the loaded model while it stays loaded (``generate.encoder_cache_mib``)."""
        return self._adapters.memo(limit_mib)

    def cleanup(self) -> None:
        super().cleanup()
        if self._owns_adapters:
            self._adapters.clear()


@dataclass
class PlannedImage:
    """One image to make, fully resolved."""

    index: int
    spec: PromptSpec
    negative: str
    width: int
    height: int
    seed: int
    steps: int
    guidance_scale: float
    guidance_rescale: float
    loras: tuple[tuple[Path, float], ...]
    lora_tags: tuple[tuple[str, float], ...]
    """The LoRAs as A1111 tags would name them (file stem, weight), for the metadata."""
    init_image: Path | None = None
    references: tuple[Path, ...] = ()
    """Edit models: the reference images edited together."""
    controls: tuple[Path, ...] = ()
    """The control image file of each of ``generate.controlnets``, in order."""


class ToFolderProcess(Process):
    """``type: to_folder``: write generated images (and optional .txt sidecars and a grid) to ``output_folder``."""

    config: GenerateProcessConfig

    def __init__(self, job: Job, config: GenerateProcessConfig, index: int):
        super().__init__(job, config, index)
        self.arch = job.registry.arch(config.model.arch)
        self.adapter: ModelAdapter | None = None
        self.base_seed: int | None = None
        self._ip_adapter: IPAdapterInput | None = None

    @property
    def output(self) -> Path:
        return Path(self.config.output_folder)

    @property
    def sampler(self) -> str:
        return self.config.generate.sampler or self.arch.spec.default_sampler

    def _default(self, value: Any, key: str, fallback: Any) -> Any:
        return value if value is not None else self.arch.defaults.get(key, fallback)

    def _init_images(self) -> list[Path]:
        from toolkit.data.images import IMAGE_EXTENSIONS

        source = self.config.generate.init_images
        if source is None:
            return []
        path = Path(source).expanduser()
        if path.is_file():
            return [path]
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if found:
                return found
            raise self.config_error(("generate", "init_images"), f"the folder '{source}' holds no images ({', '.join(IMAGE_EXTENSIONS)}).")
        raise self.config_error(("generate", "init_images"), f"'{source}' is not an image file or a folder.")

    def _reference_sets(self) -> list[tuple[Path, ...]]:
        """Edit models: the reference images of each edit (a folder: one edit per image; files: one edit of them all)."""
        from toolkit.control.inputs import image_files

        source = self.config.generate.reference_images
        if not source:
            return [()]
        files = [Path(p).expanduser() for p in ([source] if isinstance(source, str) else source)]
        if len(files) == 1 and files[0].is_dir():
            try:
                return [(path,) for path in image_files(str(files[0]))]
            except ValueError as err:
                raise self.config_error(("generate", "reference_images"), f"{err}.") from None
        for number, path in enumerate(files):
            if not path.is_file():
                where = ("generate", "reference_images", number) if isinstance(source, list) else ("generate", "reference_images")
                raise self.config_error(where, f"'{path}' is not an image file" + (" (a folder works only alone)." if path.is_dir() else "."))
        return [tuple(files)]

    def _size(self, spec: PromptSpec, init_size: tuple[int, int] | None) -> tuple[int, int]:
        """txt2img: the requested size; img2img (or a control image): the input's aspect ratio (after EXIF rotation) at
        the requested area."""
        gen, step = self.config.generate, self.arch.spec.bucket_divisibility
        width = spec.width or self._default(gen.width, "width", 512)
        height = spec.height or self._default(gen.height, "height", 512)
        if init_size is None:
            return round_to(width, step), round_to(height, step)
        return fit_aspect(init_size, width * height, step)

    def _lora_file(self, name: str, index: dict[str, Path], position: int) -> Path:
        try:
            return resolve_lora(name, index, self.config.generate.lora_dirs, "generate.loras")
        except EaselError as err:
            raise self.config_error(("generate", "loras", position, "path"), str(err).removeprefix("generate.loras: ")) from None

    def _specs(self, index: dict[str, Path]) -> list[tuple[PromptSpec, tuple[tuple[Path, float], ...]]]:
        """Each prompt, parsed, with its LoRA files: ``generate.loras`` first, then its ``<lora:...>`` tags."""
        gen = self.config.generate
        common = [(self._lora_file(ref.path, index, i), ref.weight) for i, ref in enumerate(gen.loras)]
        try:
            lines = numbered_prompts(gen.prompts)
        except EaselError as err:
            raise self.config_error(("generate", "prompts"), str(err).removeprefix("generate.prompts: ")) from None
        if not lines:
            raise self.config_error(("generate", "prompts"), "no prompts given.", "Add prompts (a list, or a text file) and run again.")
        specs = []
        for number, line in lines:
            try:
                spec = parse_prompt(line)
                tagged = [(resolve_lora(name, index, gen.lora_dirs, f"prompt '{spec.source}'"), weight) for name, weight in spec.loras]
            except EaselError as err:
                raise self._prompt_error(number, str(err)) from None
            specs.append((spec, tuple(common + tagged)))
        return specs

    def _prompt_error(self, number: int, message: str) -> Exception:
        """An error in one prompt, located at its YAML list item or at its line of the prompt file."""
        prompts, hint = self.config.generate.prompts, "Fix the prompt and run again."
        if isinstance(prompts, list):
            return self.config_error(("generate", "prompts", number), message, hint)
        return self.config_error(("generate", "prompts"), f"{prompts}, line {number}: {message}", hint)

    def plan_images(self) -> list[PlannedImage]:
        """Every image this process makes, in order (no model, no torch)."""
        from toolkit.data.images import displayed_size

        gen = self.config.generate
        try:
            lora_index = index_loras(gen.lora_dirs) if gen.lora_dirs else {}
        except EaselError as err:
            raise self.config_error(("generate", "lora_dirs"), str(err).removeprefix("generate.lora_dirs: ")) from None
        specs = self._specs(lora_index)
        self._check_control_files()
        if self.base_seed is None:
            self.base_seed = gen.seed if gen.seed != -1 else random.SystemRandom().randrange(2**32)
        inputs = self._inputs()
        edits = self._reference_sets()
        shown = [path for init, controls in inputs for path in (init, *controls) if path]
        sizes = {path: displayed_size(path) for path in [*shown, *(refs[0] for refs in edits if refs)]}  # read once
        self._check_aspects(inputs, sizes)
        planned: list[PlannedImage] = []
        for spec, loras in specs:
            tags = tuple((path.stem, weight) for path, weight in loras)
            for (init, controls), refs in ((item, refs) for item in inputs for refs in edits):
                shape = init or next(iter(controls), None) or next(iter(refs), None)
                width, height = self._size(spec, sizes.get(shape) if shape else None)
                for repeat in range(gen.images_per_prompt):
                    seed = spec.seed + repeat if spec.seed is not None else self.base_seed + len(planned)
                    planned.append(PlannedImage(
                        index=len(planned), spec=spec, negative=spec.negative if spec.negative is not None else gen.neg,
                        width=width, height=height, seed=seed % 2**32,
                        steps=spec.steps or self._default(gen.sample_steps, "sample_steps", 25),
                        guidance_scale=spec.guidance_scale if spec.guidance_scale is not None else self._default(gen.guidance_scale, "guidance_scale", 7.0),
                        guidance_rescale=spec.guidance_rescale if spec.guidance_rescale is not None else gen.guidance_rescale,
                        loras=loras, lora_tags=tags, init_image=init, controls=controls, references=refs))
        return planned

    def _check_control_files(self) -> None:
        """Depth / pose models and IP-Adapter reference images must be found (before any model loads)."""
        from toolkit.control.inputs import ip_image_problems, preprocessor_problems

        gen = self.config.generate
        problems = [(("generate", "controlnets", *where), message) for where, message in preprocessor_problems(gen.controlnets)]
        if gen.ip_adapter is not None:
            problems += [(("generate", "ip_adapter", *where), message) for where, message in ip_image_problems(gen.ip_adapter)]
        self.raise_together([self.config_error(where, f"{message}.") for where, message in problems])

    def _inputs(self) -> list[tuple[Path | None, tuple[Path, ...]]]:
        """What the prompts run over: each init image (or, without them, each image of the first ControlNet whose
        image is a folder), with the control image file of every ControlNet."""
        from toolkit.control.inputs import image_files, paired

        gen = self.config.generate
        inits = self._init_images()
        errors = []
        for index, control in enumerate(gen.controlnets):
            where = ("generate", "controlnets", index, "image")
            if control.image is None and not inits:
                errors.append(self.config_error(where, "no control image: set image, or init_images (a ControlNet "
                                                "without an image reads the init image)."))
            elif control.image is not None:
                try:
                    image_files(control.image)
                except ValueError as err:
                    errors.append(self.config_error(where, f"{err}."))
        self.raise_together(errors)
        folder = next((c.image for c in gen.controlnets if c.image and Path(c.image).expanduser().is_dir()), None)
        drivers = [(init, init.stem) for init in inits] if inits else \
            [(None, file.stem) for file in image_files(folder)] if folder else [(None, "")]
        inputs = []
        for init, stem in drivers:
            controls = []
            for index, control in enumerate(gen.controlnets):
                try:
                    controls.append(paired(control.image, stem) if control.image else init)
                except ValueError as err:
                    raise self.config_error(("generate", "controlnets", index, "image"), f"{err}.") from None
            inputs.append((init, tuple(controls)))
        return inputs  # type: ignore[return-value]

    def _check_aspects(self, inputs: list[tuple[Path | None, tuple[Path, ...]]], sizes: dict[Path, tuple[int, int]]) -> None:
        """Every control image has the shape of the image it steers (the init image, else the first control image)."""
        from toolkit.control.inputs import aspect_problem

        errors = []
        for init, controls in inputs:
            reference = init or next(iter(controls), None)
            for index, control in enumerate(controls):
                problem = aspect_problem(control, sizes[control], reference, sizes[reference]) if reference else None
                if problem:
                    errors.append(self.config_error(("generate", "controlnets", index, "image"), f"{problem}."))
        self.raise_together(errors[:5])

    def plan(self) -> list[str]:
        cfg, gen = self.config, self.config.generate
        images = self.plan_images()
        prompts = f"{len(read_prompts(gen.prompts))} prompts" + (f" from {gen.prompts}" if isinstance(gen.prompts, str) else "")
        seeds = f"{gen.seed}" if gen.seed != -1 else f"-1 (this run would use {self.base_seed})"
        lines = [f"process {self.index}: to_folder -> {self.output}",
                 f"  model: {self.arch.name} from {cfg.model.name_or_path} ({cfg.model.dtype or 'bf16 on GPU, fp32 on CPU'}, device {cfg.device})",
                 f"  sampler: {self.sampler}; {prompts} x {gen.images_per_prompt} "
                 f"-> {len(images)} images, batch {gen.batch_size}, first seed {seeds}"]
        if gen.init_images:
            lines.append(f"  img2img: {len(self._init_images())} init images from {gen.init_images}, strength {gen.strength:g}")
        if gen.reference_images:
            edits = self._reference_sets()
            lines.append(f"  edits: {len(edits)} x {len(edits[0])} reference images from {gen.reference_images}")
        for index, control in enumerate(gen.controlnets):
            window = f", steps {control.start:g}-{control.end:g}" if (control.start, control.end) != (0, 1) else ""
            mode = f", mode {control.mode}" if control.mode is not None else ""
            lines.append(f"  controlnet {index}: {control.path} (scale {control.scale:g}{window}{mode}) reading "
                         f"{control.image or 'the init image'}, preprocess {control.preprocess.type}")
        if gen.ip_adapter is not None:
            from toolkit.control.inputs import ip_image_files

            lines.append(f"  ip_adapter: {gen.ip_adapter.path}, {len(ip_image_files(gen.ip_adapter))} reference images, "
                         f"scale {gen.ip_adapter.scale:g}")
        for image in images[:20]:
            loras = "".join(f" <lora:{name}:{weight:g}>" for name, weight in image.lora_tags)
            source = f" from {image.init_image.name}" if image.init_image else ""
            source += "".join(f" +{path.name}" for path in image.controls if path != image.init_image)
            source += f" editing {', '.join(path.name for path in image.references)}" if image.references else ""
            lines.append(f"    {image.index:4d}: {image.width}x{image.height}, {image.steps} steps, cfg {image.guidance_scale:g}, "
                         f"seed {image.seed}{source}: {image.spec.prompt[:60]!r}{loras}")
        if len(images) > 20:
            lines.append(f"    ... {len(images) - 20} more")
        extras = [name for name, on in (("a .txt prompt file per image", gen.prompt_file), ("a grid", gen.grid),
                                        ("the control images beside each image", bool(gen.controlnets))) if on]
        lines.append(f"  writes: {gen.ext} images with A1111 parameters" + "".join(f", {e}" for e in extras))
        return lines

    def run(self) -> None:
        images = self.plan_images()
        if self.config.generate.seed == -1:
            log.info(f"seed -1: using random seed {self.base_seed} (recorded in each image's metadata)")
        job = self.job
        if not isinstance(job, GenerateJob):
            raise TypeError("the to_folder process runs inside job: generate")
        self.adapter = job.adapter_for(self)
        self.output.mkdir(parents=True, exist_ok=True)
        memo = job.encoder_memo(self.config.generate.encoder_cache_mib)
        reused = memo.hits
        written = self._generate_all(self.adapter, images, memo)
        if memo.hits > reused:
            log.info(f"Text encoders: {memo.hits - reused} prompt encodings reused (generate.encoder_cache_mib)")
        if self.config.generate.grid and written:
            self._write_grid(images, written)
        log.info(f"Wrote {len(written)} images to {self.output}")

    def _generate_all(self, adapter: "ModelAdapter", images: list[PlannedImage], memo: "EncoderMemo") -> list[Path]:
        """The images, grouped by their LoRAs (applied once per group); the text encoders' outputs go through ``memo``."""
        from tqdm import tqdm

        from toolkit.data.images import load_image
        from toolkit.lora_io import apply_loras, remove_loras
        from toolkit.lora_io.apply import applied_to
        from toolkit.models.loading import resolve_file

        decoded = functools.lru_cache(maxsize=4)(load_image)  # an init image serves several prompts and seeds
        start = self._next_index()
        written: dict[int, Path] = {}
        groups: dict[tuple, list[PlannedImage]] = {}
        for image in images:
            groups.setdefault(image.loras, []).append(image)
        size = self.config.generate.batch_size
        inference = self.config.model.inference_lora_path
        always = [(resolve_file(inference, "model.inference_lora_path"), 1.0)] if inference else []
        with tqdm(total=len(images), desc="images", dynamic_ncols=True) as bar:
            for loras, group in groups.items():
                apply_loras(adapter, always + list(loras))
                states = {name: applied_to(adapter, name) for name in adapter.text_encoders}
                try:
                    with memo.round(states):
                        for first in range(0, len(group), size):
                            batch = group[first:first + size]
                            requests = [self._request(image, decoded) for image in batch]
                            made = adapter.generate(requests)
                            for image, request, picture in zip(batch, requests, made):
                                written[image.index] = self._save(image, picture, start + image.index, request.controls)
                            bar.update(len(batch))
                finally:
                    remove_loras(adapter)
        return [written[index] for index in sorted(written)]

    def _request(self, image: PlannedImage, load_image: Callable[[Path], Any]) -> "GenerateRequest":
        from toolkit.control.inputs import control_input, ip_adapter_input
        from toolkit.models.base import GenerateRequest

        gen = self.config.generate
        size = (image.width, image.height)
        controls = tuple(control_input(config, path, size, self.arch.spec) for config, path in zip(gen.controlnets, image.controls))
        if gen.ip_adapter is not None and self._ip_adapter is None:
            self._ip_adapter = ip_adapter_input(gen.ip_adapter)
        return GenerateRequest(
            prompt=image.spec.prompt, width=image.width, height=image.height, steps=image.steps,
            guidance_scale=image.guidance_scale, seed=image.seed, sampler=self.sampler, negative_prompt=image.negative,
            guidance_rescale=image.guidance_rescale, strength=gen.strength, extras=dict(image.spec.extras),
            init_image=load_image(image.init_image) if image.init_image is not None else None,
            controls=controls, ip_adapter=self._ip_adapter, references=[load_image(path) for path in image.references])

    def _next_index(self) -> int:
        found = [int(m.group(1)) for p in self.output.iterdir() if (m := _INDEXED.match(p.name))] if self.output.is_dir() else []
        return max(found, default=-1) + 1

    @staticmethod
    def full_prompt(image: PlannedImage) -> str:
        """The prompt with the image's ``<lora:name:weight>`` tags, as A1111 records it."""
        return image.spec.prompt + "".join(f" <lora:{name}:{weight:g}>" for name, weight in image.lora_tags)

    def parameters(self, image: PlannedImage) -> str:
        """The A1111 ``parameters`` text of one image."""
        from toolkit.control.inputs import metadata
        from toolkit.sampling.pngmeta import format_parameters
        from toolkit.sampling.samplers import A1111_NAMES

        prompt = self.full_prompt(image)
        params: dict[str, Any] = {
            "Steps": image.steps, "Sampler": A1111_NAMES.get(self.sampler, self.sampler), "CFG scale": float(image.guidance_scale),
            "Seed": image.seed, "Size": f"{image.width}x{image.height}", "Model": self._model_name(),
            "Denoising strength": float(self.config.generate.strength) if image.init_image is not None else None,
            "CFG Rescale": float(image.guidance_rescale) if image.guidance_rescale else None,
            **metadata(list(zip(self.config.generate.controlnets, image.controls)), self.config.generate.ip_adapter),
            "Architecture": self.arch.name, "Version": "easel",
        }
        return format_parameters(prompt, image.negative if image.guidance_scale > 1 else "", params)

    def _model_name(self) -> str:
        from toolkit.sampling.pngmeta import model_label

        return model_label(self.config.model.name_or_path)

    def _save(self, image: PlannedImage, picture: "Image.Image", number: int, controls: "tuple[ControlInput, ...]") -> Path:
        """The image (with its parameters), its .txt prompt where asked, and the control images it was made with."""
        from toolkit.output import atomic_path, write_text_atomic
        from toolkit.sampling.pngmeta import save_image

        ext = self.config.generate.ext
        target = under(self.output, f"{number:05d}_{image.seed}.{ext}", what="image file")
        with atomic_path(target) as temp:
            save_image(picture, temp, self.parameters(image), ext=ext)
        for index, control in enumerate(controls):
            with atomic_path(under(self.output, f"{target.stem}_control{index}.png", what="control image file")) as temp:
                control.image.save(temp, format="PNG")
        if self.config.generate.prompt_file:
            write_text_atomic(target.with_suffix(".txt"), image.spec.prompt + "\n")
        return target

    def _write_grid(self, images: list[PlannedImage], files: list[Path]) -> None:
        from PIL import Image

        from toolkit.sampling.grid import distinct_labels, make_grid, save_grid

        pictures = []
        for path in files:
            with Image.open(path) as opened:
                pictures.append(opened.convert("RGB"))
        prompts = [self.full_prompt(image) for image in images]
        shown = [f"{image.seed}: {prompt}" for image, prompt in zip(images, distinct_labels(prompts))]
        target = under(self.output, f"grid_{files[0].name.split('_')[0]}.png", what="grid file")
        save_grid(make_grid(pictures, shown, abbreviate=False), target,
                  {"labels": [f"{image.seed}: {prompt}" for image, prompt in zip(images, prompts)]})
        log.info(f"Wrote the grid {target}")

    def cleanup(self) -> None:
        self.adapter = None
