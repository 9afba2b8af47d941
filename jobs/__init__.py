"""The built-in job kinds and the process types that belong to them.

Process types of ``job: extension`` come from packages under ``extensions/``; the other job
kinds bring their own here. Nothing heavy is imported: classes are named by import path.
"""

from toolkit.registry import Extension, JobSpec, ProcessSpec

EXTENSION = Extension(
    name="builtin",
    description="easel's built-in job kinds",
    jobs=(
        JobSpec("extension", "jobs.extension:ExtensionJob", "Run processes that extensions provide (training)."),
        JobSpec("generate", "jobs.generate:GenerateJob", "Generate images (txt2img, img2img) with LoRA stacks."),
        JobSpec("convert", "jobs.convert:ConvertJob", "LoRA file tools: convert formats, merge, resize, inspect."),
    ),
    processes=(
        ProcessSpec("generate", "to_folder", "toolkit.config.generate:GenerateProcessConfig",
                    "jobs.generate:ToFolderProcess", description="Write generated images to a folder."),
        ProcessSpec("convert", "convert", "toolkit.config.convert:ConvertProcessConfig", "jobs.convert:ConvertProcess",
                    description="Rewrite a LoRA in another key layout (kohya, comfy, diffusers, peft)."),
        ProcessSpec("convert", "merge", "toolkit.config.convert:MergeProcessConfig", "jobs.convert:MergeProcess",
                    description="Bake LoRAs into a base model, or merge LoRAs into one (concat or SVD)."),
        ProcessSpec("convert", "resize", "toolkit.config.convert:ResizeProcessConfig", "jobs.convert:ResizeProcess",
                    description="Reduce a LoRA's rank by SVD and report the energy kept."),
        ProcessSpec("convert", "inspect", "toolkit.config.convert:InspectProcessConfig", "jobs.convert:InspectProcess",
                    description="Show a LoRA's architecture, format, ranks, metadata and trigger words."),
    ),
)
