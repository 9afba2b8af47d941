"""The example process: plan() for --dry-run, run() for the work. Heavy imports would go inside run()."""

from pathlib import Path

from extensions.example.config import ExampleNoteConfig
from toolkit.job import Process
from toolkit.log import log
from toolkit.output import RunFolder, write_text_atomic


class ExampleNoteProcess(Process):
    """Writes ``message`` ``repeat`` times to note.txt in the run folder."""

    config: ExampleNoteConfig

    def plan(self) -> list[str]:
        target = Path(self.config.training_folder) / self.job.name / "note.txt"
        return [f"process {self.index}: example_note -> {target} ({self.config.repeat} line(s))"]

    def run(self) -> None:
        folder = RunFolder(Path(self.config.training_folder), self.job.name)
        folder.open(self.job.loaded.resolved)
        try:
            write_text_atomic(folder.path / "note.txt", "\n".join([self.config.message] * self.config.repeat) + "\n")
            log.info(f"wrote {folder.path / 'note.txt'}")
        finally:
            folder.close()
