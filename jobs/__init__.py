"""The built-in job kinds and the process types that belong to them.

``job: extension`` runs the trainer (``lora_trainer``, in ``jobs/train.py``) and the process types that
packages under ``extensions/`` add; the other job kinds bring their own here. Nothing heavy is imported:
classes are named by import path.
"""

from toolkit.registry import Extension, JobSpec, ProcessSpec

EXTENSION = Extension(
    name="builtin",
    description="easel's built-in job kinds",
    jobs=(
        JobSpec("extension", "jobs.extension:ExtensionJob", "Train adapters (lora_trainer) and run processes that extensions provide."),
        JobSpec("generate", "jobs.generate:GenerateJob", "Generate images (txt2img, img2img) with LoRA stacks."),
        JobSpec("dataset", "jobs.dataset:DatasetJob", "Prepare an image folder: filter, dedupe, resize, caption formats, tags."),
        JobSpec("caption", "jobs.caption:CaptionJob", "Caption images with a vision-language model (BLIP, BLIP-2, Florence-2)."),
        JobSpec("evaluate", "jobs.evaluate:EvaluateJob", "Compare LoRA variants: CLIP score, style similarity, reports, grid."),
        JobSpec("convert", "jobs.convert:ConvertJob", "LoRA file tools: convert formats, merge, resize, inspect."),
        JobSpec("extract", "jobs.extract:ExtractJob", "A LoRA from the difference of two checkpoints (ai-toolkit's extract).",
                body="toolkit.config.extract:ExtractJobBody"),
        JobSpec("mod", "jobs.extract:ModJob", "Modify a LoRA file: rescale its weight (ai-toolkit's mod)."),
    ),
    processes=(
        ProcessSpec("extension", "lora_trainer", "toolkit.config.train:LoraTrainerConfig", "jobs.train:LoraTrainerProcess",
                    aliases=("sd_trainer", "diffusion_trainer"),
                    description="Train an adapter, sample previews, save .safetensors files."),
        ProcessSpec("generate", "to_folder", "toolkit.config.generate:GenerateProcessConfig",
                    "jobs.generate:ToFolderProcess", description="Write generated images to a folder."),
        ProcessSpec("dataset", "filter", "toolkit.config.prep:FilterConfig", "jobs.dataset:FilterProcess",
                    description="Drop blurry (Laplacian variance), small, oddly shaped and unreadable images."),
        ProcessSpec("dataset", "dedupe", "toolkit.config.prep:DedupeConfig", "jobs.dataset:DedupeProcess",
                    description="Drop near-duplicate images (perceptual hash distance)."),
        ProcessSpec("dataset", "resize", "toolkit.config.prep:ResizeConfig", "jobs.dataset:ResizeProcess",
                    description="Center-crop to a square, or resize to a longest side keeping the aspect ratio."),
        ProcessSpec("dataset", "convert_captions", "toolkit.config.prep:ConvertCaptionsConfig", "jobs.dataset:ConvertCaptionsProcess",
                    description="Write captions as .txt sidecars, metadata.jsonl and/or metadata.csv."),
        ProcessSpec("dataset", "tag", "toolkit.config.prep:TagConfig", "jobs.dataset:TagProcess",
                    description="Add a trigger word or style tag to every caption, once."),
        ProcessSpec("caption", "image_to_text", "toolkit.config.caption:CaptionProcessConfig", "jobs.caption:ImageToTextProcess",
                    description="Write a caption file per image with an image-to-text model."),
        ProcessSpec("evaluate", "compare", "toolkit.config.evaluate:EvaluateProcessConfig", "jobs.evaluate:CompareProcess",
                    description="Generate each variant's images and score them with CLIP; write results and a grid."),
        ProcessSpec("convert", "convert", "toolkit.config.convert:ConvertProcessConfig", "jobs.convert:ConvertProcess",
                    description="Rewrite a LoRA in another key layout (kohya, comfy, diffusers, peft)."),
        ProcessSpec("convert", "merge", "toolkit.config.convert:MergeProcessConfig", "jobs.convert:MergeProcess",
                    description="Bake LoRAs into a base model, or merge LoRAs into one (concat or SVD)."),
        ProcessSpec("convert", "resize", "toolkit.config.convert:ResizeProcessConfig", "jobs.convert:ResizeProcess",
                    description="Reduce a LoRA's rank by SVD and report the energy kept."),
        ProcessSpec("convert", "inspect", "toolkit.config.convert:InspectProcessConfig", "jobs.convert:InspectProcess",
                    description="Show a LoRA's architecture, format, ranks, metadata and trigger words."),
        ProcessSpec("extract", "lora", "toolkit.config.extract:ExtractProcessConfig", "jobs.extract:ExtractProcess",
                    description="Write a LoRA of the linear layers' changes (truncated SVD, rank by mode)."),
        ProcessSpec("extract", "locon", "toolkit.config.extract:ExtractProcessConfig", "jobs.extract:ExtractProcess",
                    description="Write a LoCon: linear layers and 3x3 convolutions."),
        ProcessSpec("mod", "rescale_lora", "toolkit.config.extract:RescaleLoraConfig", "jobs.extract:RescaleLoraProcess",
                    description="Rescale a LoRA so target_weight gives what current_weight gave."),
    ),
)
