"""The repeated pieces of a model, found by walking its module tree (no architecture named): what memory
placement offloads and quantizes one by one, and what ``train.compile`` compiles by default."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def blocks(module: "nn.Module") -> list[tuple[str, "nn.Module"]]:
    """The repeated blocks: items of the top-level ``nn.ModuleList``s, in registration order."""
    from torch import nn

    return [(f"{name}.{index}", block) for name, child in module.named_children() if isinstance(child, nn.ModuleList)
            for index, block in enumerate(child)]


def layer_blocks(module: "nn.Module") -> list[tuple[str, "nn.Module"]]:
    """The repeated layers wherever they sit: items of the outermost ``nn.ModuleList``s at any depth (a CLIP text
    model's ``text_model.encoder.layers``, a Qwen3's ``layers``); what text-encoder offloading streams."""
    from torch import nn

    found: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        if isinstance(child, nn.ModuleList):
            found += [(f"{name}.{index}", item) for index, item in enumerate(child)]
        else:
            found += [(f"{name}.{path}", block) for path, block in layer_blocks(child)]
    return found


def units(module: "nn.Module", prefix: str = "") -> list[tuple[str, "nn.Module"]]:
    """Pieces that together hold every submodule: list items, or children without lists inside, recursively."""
    from torch import nn

    found: list[tuple[str, nn.Module]] = []
    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(child, nn.ModuleList):
            found += [(f"{path}.{index}", item) for index, item in enumerate(child)]
        elif any(isinstance(m, nn.ModuleList) for m in child.modules()):
            found += units(child, path)
        else:
            found.append((path, child))
    return found
