"""``job: extension``: runs the processes that extensions provide (the LoRA trainer among them)."""

from toolkit.job import Job


class ExtensionJob(Job):
    """Runs each process in order; the processes own their run folders."""
