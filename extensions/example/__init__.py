"""A template extension: copy this folder to start a new process type or architecture.

Declare what the package provides here, by import path only, so that discovery stays fast
and imports no torch. The registry finds every package under extensions/ that defines EXTENSION.
"""

from toolkit.registry import Extension, ProcessSpec

EXTENSION = Extension(
    name="example",
    description="Template: a process that writes a note into its run folder.",
    processes=(
        ProcessSpec(
            job="extension",
            name="example_note",
            config="extensions.example.config:ExampleNoteConfig",
            runner="extensions.example.process:ExampleNoteProcess",
            description="Write `message` to <training_folder>/<name>/note.txt.",
        ),
    ),
    # A new architecture would add: architectures=(ArchSpec(name=..., adapter="extensions.<pkg>.adapter:<Class>", ...),)
)
