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
    ),
    processes=(
        ProcessSpec("generate", "to_folder", "toolkit.config.generate:GenerateProcessConfig",
                    "jobs.generate:ToFolderProcess", description="Write generated images to a folder."),
    ),
)
