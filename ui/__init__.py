"""easel's web UI: create, queue and watch training jobs, manage datasets, generate with LoRAs.

A room of its own: it speaks to the runner only through the job API (``toolkit.config.job.load_job_config``
validates, ``run.py`` runs, a run folder's files tell the progress) and never imports the trainer. Jobs run
in a worker process (``ui.worker``) that starts ``python run.py CONFIG`` for each, one at a time per device,
so a crash or an out-of-memory kill never takes the server down; the queue is SQLite under the output folder.
Generation runs in a long-lived process of its own (``ui.generator``) that keeps the model loaded.
Start: ``python run.py --ui`` (``--help`` lists the options).
"""
