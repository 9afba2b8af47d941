"""The LoRA trainer.

``process.py`` is the process (``plan`` for --dry-run, ``run``); ``setup.py`` builds the parts of a run in
order; ``loop.py`` is the loop, top to bottom. Around them: ``noise.py`` (timesteps, noising, targets, loss
weights), ``loss.py``, ``optimizers.py``, ``lr.py``, ``ema.py``, ``state.py`` (resume), ``checkpoint.py``
(LoRA files), ``sampling.py`` (previews) and ``logs.py`` (progress bar, loss.csv, TensorBoard, loss.png).
"""
