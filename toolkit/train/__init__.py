"""The LoRA trainer.

``recipe.py`` is the whole run, top to bottom (``LoraTrainingRecipe``: setup, train, save_checkpoint, cleanup);
``jobs/train.py`` is the process that plans it for --dry-run and hands it its model loader and data. The
recipe's parts, each in its own module: ``step.py`` (one batch's forward pass and loss), ``network.py`` (which
modules are trained, at which learning rates), ``checkpointing.py`` (gradient checkpointing), ``working.py``
(bf16 working copies), ``sharding.py`` (the frozen denoiser split across processes), ``noise.py`` (timesteps, noising, targets, loss weights), ``loss.py``, ``optimizers.py``,
``lr.py``, ``ema.py``, ``state.py`` (resume), ``checkpoint.py`` (LoRA files), ``sampling.py`` (previews),
``signals.py`` (stopping cleanly) and ``logs.py`` (progress bar, loss.csv, TensorBoard, loss.png).
"""
