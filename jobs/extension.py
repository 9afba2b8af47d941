"""``job: extension``: runs the trainer (``jobs/train.py``) and the processes that extensions provide."""

from toolkit.job import Job


class ExtensionJob(Job):
    """Runs each process in order; the processes own their run folders."""
