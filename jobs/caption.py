"""``job: caption``: write a caption file next to each image, made by an image-to-text model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.config.caption import CaptionProcessConfig
from toolkit.data.scan import caption_file, list_dataset, read_caption
from toolkit.job import Job, Process
from toolkit.log import log
from toolkit.output import write_text_atomic
from toolkit.prep.tagging import add_tag


class CaptionJob(Job):
    """Runs each captioning process in order."""


class ImageToTextProcess(Process):
    """Captions the images of ``folder_path`` that need it and writes ``<stem>.<caption_ext>`` files."""

    config: CaptionProcessConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._model: Any = None

    def _images(self) -> tuple[list[Path], list[Path], int]:
        """(all images, those to caption, how many keep a metadata caption), by the training scan's rules.

        An image with a metadata.jsonl/csv text is never captioned: training reads that text before any
        caption file, so a new file would go unused. One with a non-empty caption file is redone only with
        ``overwrite``.
        """
        folder = Path(self.config.folder_path)
        if not folder.is_dir():
            raise self.config_error(("folder_path",), f"the folder '{folder}' does not exist; point folder_path at a folder of images.")
        listing = list_dataset(folder)
        found = [read_caption(p, self.config.caption_ext, listing.metadata) for p in listing.images]
        sources = [f[1] if f else None for f in found]
        todo = [p for p, source in zip(listing.images, sources) if source is None or (self.config.overwrite and source == "file")]
        return listing.images, todo, sources.count("metadata")

    def plan(self) -> list[str]:
        head = f"process {self.index}: {self.config.type} with {self.config.model}"
        if not Path(self.config.folder_path).is_dir():
            return [head, f"  folder_path {self.config.folder_path} does not exist (yet)"]
        images, todo, by_metadata = self._images()
        kept = f"{len(images) - len(todo) - by_metadata} keep their .{self.config.caption_ext} files"
        if by_metadata:
            kept += f", {by_metadata} their metadata.jsonl/csv caption"
        return [head, f"  {len(images)} images in {self.config.folder_path}; {len(todo)} to caption ({kept})"]

    def _finish(self, caption: str) -> str:
        text = add_tag(caption, self.config.prefix, "prefix", self.config.separator) if self.config.prefix else caption
        return add_tag(text, self.config.suffix, "suffix", self.config.separator) if self.config.suffix else text

    def run(self) -> None:
        from toolkit.devices import resolve_device, resolve_dtype
        from toolkit.prep.captioner import Captioner, caption_images, load_captioning_model

        images, todo, by_metadata = self._images()
        log.info(f"{len(images)} images in {self.config.folder_path}: {len(todo)} to caption, "
                 f"{len(images) - len(todo)} already captioned and kept"
                 + (f" ({by_metadata} by metadata.jsonl/csv, which training reads before caption files)" if by_metadata else ""))
        if not todo:
            return
        device = resolve_device(self.config.device)
        dtype = resolve_dtype(self.config.dtype or ("fp16" if device.type == "cuda" else "fp32"))
        self._model, processor = load_captioning_model(self.config.model, device=device, dtype=dtype, revision=self.config.revision,
                                                       trust_remote_code=self.config.trust_remote_code)
        if self.config.prompt and not getattr(processor, "takes_prompt", True):
            raise self.config_error(("prompt",), f"the model '{self.config.model}' takes no prompt (its repository has an image "
                                    "processor and a tokenizer but no processor that combines images with text).",
                                    "Remove `prompt` for this model, or use one that is conditioned on text (BLIP, BLIP-2, Florence-2).")
        captioner = Captioner(self._model, processor, self.config.prompt, self.config.keep_prompt, self.config.max_new_tokens,
                              self.config.num_beams, self.config.generate_kwargs)
        failed: list[str] = []
        empty = 0
        for path, caption, problem in caption_images(captioner, todo, self.config.batch_size):
            if caption is None:
                failed.append(f"{path.name} ({problem})")
                continue
            empty += not caption
            write_text_atomic(caption_file(path, self.config.caption_ext), self._finish(caption) + "\n")
        log.info(f"wrote {len(todo) - len(failed)} captions" + (f"; {empty} came out empty" if empty else ""))
        if failed:
            log.warning(f"skipped {len(failed)} unreadable images: {', '.join(failed[:10])}" + (" ..." if len(failed) > 10 else ""))

    def cleanup(self) -> None:
        self._model = None
