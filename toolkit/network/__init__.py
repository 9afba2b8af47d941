"""LoRA / LyCORIS adapters wrapped around a model's layers (peft, lycoris-lora); no architecture knowledge.

``toolkit.network.network.Network`` is the entry point; ``targets`` picks the layers, ``layers`` is the
per-layer glue to peft and LyCORIS.
"""
