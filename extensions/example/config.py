"""The example process's config: a Block, so unknown keys are errors and docstrings are the docs."""

from typing import ClassVar, Literal

from pydantic import Field

from toolkit.config.base import Block


class ExampleNoteConfig(Block):
    """Write a short note into the run folder."""

    block_name: ClassVar[str] = "process[]"

    type: Literal["example_note"]
    """Process type."""
    training_folder: str = "output"
    """Runs land in ``<training_folder>/<name>/``."""
    message: str = Field(min_length=1)
    """The text written to note.txt."""
    repeat: int = Field(1, ge=1, le=100)
    """How many times the message is written."""
