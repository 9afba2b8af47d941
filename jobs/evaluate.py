"""``job: evaluate``: compare LoRA variants of one base model (seed 003's experiment as a config).

For each variant the same prompts and seeds are generated (``toolkit.eval.generation``; from each of ``init_images``
when given, img2img with the variant's strength and ControlNets), saved under ``images/<index>_<variant>/``; then a CLIP
model scores every image: CLIP score against its prompt, and style similarity against the reference images; with
inputs, "structure kept" is the edge agreement of each output with its input (``toolkit.control.edges``).
``results.json``, ``results.md`` (a column's strict best bold),
``results.csv`` and ``grid.png`` (rows = variants, columns = prompts) land in ``output_folder``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.config.evaluate import EvaluateProcessConfig, VariantConfig
from toolkit.errors import EaselError
from toolkit.job import Job, Process
from toolkit.log import log
from toolkit.output import RunFolder
from toolkit.paths import under

if TYPE_CHECKING:
    import numpy as np

    from toolkit.eval.clip import ClipEmbedder
    from toolkit.eval.generation import GenerationSettings
    from toolkit.eval.report import EvalResults, VariantResult


class EvaluateJob(Job):
    """Runs each comparison process in order."""


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "variant"


class CompareProcess(Process):
    """Generates every variant's images, scores them with CLIP, writes the reports and the grid."""

    config: EvaluateProcessConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.folder = Path(self.config.output_folder)
        self._run_folder: RunFolder | None = None

    def _references(self, variant: VariantConfig) -> str | None:
        return variant.reference_images or self.config.reference_images

    def _inputs(self) -> list[Path]:
        from toolkit.control.inputs import image_files

        if self.config.init_images is None:
            return []
        try:
            return image_files(self.config.init_images)
        except ValueError as err:
            raise self.config_error(("init_images",), f"{err}.") from None

    def _cells(self) -> list[tuple[int, Path | None, int]]:
        """(prompt index, input image, seed) of each image a variant makes, in order."""
        return [(p, init, seed) for p in range(len(self.config.prompts)) for init in (self._inputs() or [None])
                for seed in self.config.resolved_seeds()]

    def plan(self) -> list[str]:
        seeds = self.config.resolved_seeds()
        lines = [f"process {self.index}: {self.config.type}: {len(self.config.variants)} variants x {len(self.config.prompts)} "
                 f"prompts x {len(seeds)} seeds (seeds {seeds}) with {self.config.model.name_or_path}"]
        if self.config.init_images:
            lines.append(f"  img2img from {len(self._inputs())} inputs in {self.config.init_images} (structure kept is measured)")
        for variant in self.config.variants:
            loras = ", ".join(f"{lora.path} @ {lora.weight:g}" for lora in variant.loras) or "no LoRA"
            controls = "".join(f"; ControlNet {c.path} ({c.preprocess.type}, scale {c.scale:g})" for c in variant.controlnets)
            strength = f"; strength {self._strength(variant):g}" if self.config.init_images else ""
            lines.append(f"  {variant.name}: {loras}{strength}{controls}; style reference: {self._references(variant) or '-'}")
        lines.append(f"  CLIP model {self.config.clip_model}; writes {self.folder}/results.json, results.md, results.csv, grid.png")
        return lines

    def _strength(self, variant: VariantConfig) -> float:
        return variant.strength if variant.strength is not None else self.config.strength

    def _check_files(self) -> None:
        from toolkit.control.inputs import preprocessor_problems

        self._inputs()
        self.raise_together([self.config_error(("variants", v, "controlnets", *where), f"{message}.")
                             for v, variant in enumerate(self.config.variants)
                             for where, message in preprocessor_problems(variant.controlnets)])
        for v, variant in enumerate(self.config.variants):
            for i, lora in enumerate(variant.loras):
                if not Path(lora.path).is_file():
                    raise self.config_error(("variants", v, "loras", i, "path"), f"variant '{variant.name}': the LoRA file '{lora.path}' does not exist.")
            folder = self._references(variant)
            if folder and not Path(folder).is_dir():
                where = ("variants", v, "reference_images") if variant.reference_images else ("reference_images",)
                raise self.config_error(where, f"variant '{variant.name}': the reference_images folder '{folder}' does not exist.")

    def _settings(self) -> "GenerationSettings":
        from toolkit.eval.generation import GenerationSettings

        arch = self.job.registry.arch(self.config.model.arch)
        given = self.config.generate

        def pick(value: Any, key: str) -> Any:
            if value is None and key not in arch.defaults:
                raise EaselError(f"architecture '{arch.name}' has no default {key}; set generate.{key} in the config.")
            return arch.defaults[key] if value is None else value

        return GenerationSettings(
            registry=self.job.registry, device=self.config.device, width=pick(given.width, "width"),
            height=pick(given.height, "height"), steps=pick(given.sample_steps, "sample_steps"),
            guidance_scale=pick(given.guidance_scale, "guidance_scale"), sampler=given.sampler or arch.spec.default_sampler,
            negative_prompt=given.neg, guidance_rescale=given.guidance_rescale, batch_size=given.batch_size)

    def _generate(self, settings: "GenerationSettings") -> dict[str, list[Path]]:
        """Every variant's images, saved as images/<index>_<variant>/<prompt>_<seed>.png (prompt-major order)."""
        from toolkit.eval import generation

        seeds, cells = self.config.resolved_seeds(), self._cells()
        saved: dict[str, list[Path]] = {}
        try:
            for index, variant in enumerate(self.config.variants):
                log.info(f"generating variant '{variant.name}' ({len(cells)} images)")
                images = generation.generate_images(self.config.model, variant.loras, self.config.prompts, seeds, settings,
                                                    inputs=self._inputs(), strength=self._strength(variant),
                                                    controlnets=variant.controlnets)
                folder = under(self.folder, "images", f"{index:02d}_{_folder_name(variant.name)}", what="variant folder")
                folder.mkdir(parents=True, exist_ok=True)
                if len(images) != len(cells):
                    raise EaselError(f"generation returned {len(images)} images for {len(cells)} requests (variant '{variant.name}')")
                saved[variant.name] = []
                for image, (prompt_index, init, seed) in zip(images, cells):
                    path = folder / (f"{prompt_index:02d}_{_folder_name(init.stem)}_{seed}.png" if init else f"{prompt_index:02d}_{seed}.png")
                    image.save(path)
                    saved[variant.name].append(path)
        finally:
            generation.release_models()
        return saved

    def _score(self, saved: dict[str, list[Path]]) -> "EvalResults":
        from toolkit.devices import resolve_device, resolve_dtype
        from toolkit.eval.clip import ClipEmbedder
        from toolkit.eval.report import EvalResults

        device = resolve_device(self.config.device)
        clip = ClipEmbedder(self.config.clip_model, device=device, dtype=resolve_dtype("fp16" if device.type == "cuda" else "fp32"),
                            batch_size=self.config.clip_batch_size)
        prompt_embeds = clip.texts(self.config.prompts)
        references: dict[str, np.ndarray] = {}
        variants = [self._score_variant(clip, variant, saved[variant.name], prompt_embeds, references) for variant in self.config.variants]
        return EvalResults(self.config.clip_model, self.config.clip_score_scale, list(self.config.prompts),
                           self.config.resolved_seeds(), variants)

    def _score_variant(self, clip: "ClipEmbedder", variant: VariantConfig, paths: list[Path], prompt_embeds: "np.ndarray",
                       references: "dict[str, np.ndarray]") -> "VariantResult":
        from toolkit.eval.metrics import clip_scores, style_similarities
        from toolkit.eval.report import ImageResult, VariantResult

        cells = self._cells()
        embeds, _ = clip.image_files(paths)
        scores = clip_scores(embeds, prompt_embeds[[p for p, _, _ in cells]], self.config.clip_score_scale)
        folder = self._references(variant)
        styles = None
        if folder:
            if folder not in references:
                references[folder] = _reference_embeddings(clip, Path(folder))
            styles = style_similarities(embeds, references[folder])
        images = [ImageResult(p, self.config.prompts[p], seed, path.relative_to(self.folder).as_posix(), float(scores[i]),
                              None if styles is None else float(styles[i]), _structure(init, path),
                              None if init is None else str(init))
                  for i, ((p, init, seed), path) in enumerate(zip(cells, paths))]
        return VariantResult(variant.name, [lora.model_dump() for lora in variant.loras], folder, images)

    def run(self) -> None:
        from toolkit.eval.report import degenerate_notes, markdown_table, write_results

        from toolkit.eval.clip import check_clip_model

        self._check_files()
        check_clip_model(self.config.clip_model)
        settings = self._settings()
        self._run_folder = RunFolder(self.folder)
        self._run_folder.open(self.job.loaded.resolved)
        saved = self._generate(settings)
        results = self._score(saved)
        write_results(self.folder, results)
        self._write_grid(saved)
        log.info(f"wrote {self.folder}/results.json, results.md, results.csv, grid.png\n{markdown_table(results)}")
        for note in degenerate_notes(results):
            log.warning(f"warning: {note}")

    def _write_grid(self, saved: dict[str, list[Path]]) -> None:
        from toolkit.data.images import load_image
        from toolkit.eval.grid import comparison_grid
        from toolkit.sampling.grid import save_grid

        inputs = self._inputs()
        per_prompt = len(self.config.resolved_seeds()) * max(1, len(inputs))
        cells = [[[load_image(path) for path in paths[i:i + per_prompt]] for i in range(0, len(paths), per_prompt)]
                 for paths in saved.values()]
        grid = comparison_grid(list(saved), list(self.config.prompts), cells, self.config.grid_cell)
        labels: dict[str, Any] = {"rows": list(saved), "columns": list(self.config.prompts), "seeds": self.config.resolved_seeds()}
        if inputs:
            labels["inputs"] = [str(path) for path in inputs]
        save_grid(grid, self.folder / "grid.png", labels)

    def cleanup(self) -> None:
        if self._run_folder is not None:
            self._run_folder.close()
            self._run_folder = None


def _structure(init: Path | None, output: Path) -> float | None:
    """Edge agreement of an output with its input image; None without one."""
    if init is None:
        return None
    from toolkit.control.edges import edge_agreement
    from toolkit.data.images import load_image

    return edge_agreement(load_image(init), load_image(output))


def _reference_embeddings(clip: "ClipEmbedder", folder: Path) -> "np.ndarray":
    """CLIP embeddings of a style reference folder's images (unreadable ones are skipped with a warning)."""
    from toolkit.prep.pipeline import list_images

    embeds, skipped = clip.image_files(list_images(folder))
    if skipped:
        log.warning(f"skipped unreadable reference images in {folder}: {', '.join(skipped)}")
    if len(embeds) == 0:
        raise EaselError(f"reference_images folder '{folder}' holds no readable images.")
    return embeds
