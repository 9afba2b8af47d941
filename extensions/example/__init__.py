"""A template extension: copy this folder to start a new architecture or process type.

Declare what the package provides here, by import path only, so that discovery stays fast and imports no
torch. The registry finds every package under extensions/ that defines EXTENSION. This one provides both
kinds: the architecture ``example`` (``spec.py``, ``adapter.py``, ``tiny.py``, tested by ``test_example.py``
with the shared adapter suite) and the process type ``example_note`` (``config.py``, ``process.py``).
"""

from extensions.example.spec import SPEC
from toolkit.registry import Extension, ProcessSpec

EXTENSION = Extension(
    name="example",
    description="Template: an architecture, and a process that writes a note into its run folder.",
    architectures=(SPEC,),
    processes=(
        ProcessSpec(
            job="extension",
            name="example_note",
            config="extensions.example.config:ExampleNoteConfig",
            runner="extensions.example.process:ExampleNoteProcess",
            description="Write `message` to <training_folder>/<name>/note.txt.",
        ),
    ),
)
