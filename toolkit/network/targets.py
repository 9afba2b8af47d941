"""Which layers of a model an adapter wraps, and with what rank and alpha. No architecture knowledge.

Rules (kohya's and ai-toolkit's, so their configs train the same layers):

- a target name matches a module whose path (relative to its component) equals it or ends with
  ``"." + name``; a match that is a container (not a layer) stands for every layer inside it;
- ``nn.Linear`` layers and 1x1 ``nn.Conv2d`` layers are "linear": rank ``linear``, alpha ``linear_alpha``
  (kohya wraps SD's 1x1 ``proj_in``/``proj_out`` at the linear rank);
- larger ``nn.Conv2d`` kernels (3x3) are wrapped only when ``conv`` is set, at rank ``conv`` and alpha
  ``conv_alpha``. ``type: lora`` and ``type: locon`` are the same thing, as in ai-toolkit: LoCon is LoRA
  with ``conv`` set;
- ``ignore_if_contains`` / ``only_if_contains`` test the name ``"{component}.{path}"``, so a component
  can be filtered as a whole (e.g. ``ignore_if_contains: [text_encoder_2]``);
- other layer kinds (norms, embeddings, Conv1d/3d) are never wrapped;
- ``full_if_contains`` (ai-toolkit's): a layer that would be wrapped, or a 3x3 convolution of the targets even without
  ``conv``, whose name contains one of its words trains a full weight difference instead of a low-rank adapter;
- with the architecture's ``NetworkLayout``: ``transformer_only`` keeps the denoiser's layers inside its named
  transformer blocks, and kohya's ``block_dims`` / ``conv_block_dims`` (25 values: IN00-IN11, MID, OUT00-OUT11) give
  each UNet block its own rank and alpha (0: not wrapped; convolutions are then wrapped even without ``conv``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from toolkit.errors import EaselError

if TYPE_CHECKING:
    from torch import nn

    from toolkit.config.blocks import NetworkConfig


@dataclass(frozen=True)
class NetworkLayout:
    """What the architecture tells the network about its denoiser (``ModelAdapter.network_layout``)."""

    denoiser: str
    transformer_blocks: tuple[str, ...] = ()
    """Paths of its main transformer blocks (``network.transformer_only``); empty: no restriction."""
    block_of: "Callable[[str], int | None] | None" = None
    """kohya's block index (0-24) of a denoiser layer path, for ``block_dims``; None outside the blocks."""


@dataclass(frozen=True)
class Target:
    """One layer to wrap."""

    component: str
    path: str
    layer: "nn.Module"
    kind: str
    """``linear`` (Linear or 1x1 conv) or ``conv`` (larger kernels)."""
    rank: int
    alpha: float
    full: bool = False
    """A full weight difference instead of a low-rank adapter (``full_if_contains``; rank and alpha unused)."""

    @property
    def key(self) -> str:
        """The layer's name in state dicts: ``{component}.{path}``."""
        return f"{self.component}.{self.path}"


def layer_kind(module: "nn.Module") -> str | None:
    """``linear``, ``conv`` or None (not wrappable). Layers already wrapped by peft count as their base layer."""
    from torch import nn

    base = base_layer(module)
    if isinstance(base, nn.Linear):
        return "linear"
    if isinstance(base, nn.Conv2d):
        return "linear" if tuple(base.kernel_size) == (1, 1) else "conv"
    return None


def base_layer(module: "nn.Module") -> "nn.Module":
    """The plain layer under any peft wrappers (or the module itself)."""
    while hasattr(module, "base_layer"):
        module = module.base_layer
    return module


def walk(module: "nn.Module", prefix: str = "") -> Iterator[tuple[str, "nn.Module"]]:
    """``named_modules`` that treats peft-wrapped layers as leaves (their internals are not model layers)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, child in module.named_children():
        path = f"{prefix}.{name}" if prefix else name
        yield path, child
        if not isinstance(child, BaseTunerLayer):
            yield from walk(child, path)


def _matches(path: str, name: str) -> bool:
    return path == name or path.endswith("." + name)


def _layers_under(path: str, module: "nn.Module") -> Iterator[tuple[str, "nn.Module"]]:
    if layer_kind(module) is not None:
        yield path, module
        return
    for sub_path, sub in walk(module, path):
        if layer_kind(sub) is not None:
            yield sub_path, sub


def select_targets(components: dict[str, "nn.Module"], names: dict[str, list[str]], config: "NetworkConfig",
                   layout: NetworkLayout | None = None) -> list[Target]:
    """The layers to wrap in each component, by target name, kind and the config's filters.

    Raises:
        EaselError: a target name matches no module in any component, or nothing is left to wrap.
    """
    unmatched = {name for wanted in names.values() for name in wanted}
    targets: dict[str, Target] = {}
    for component, wanted in names.items():
        if component not in components:
            raise EaselError(f"the model has no component '{component}' to put an adapter on; it has: {', '.join(components)}.")
        for path, module in walk(components[component]):
            hits = [name for name in wanted if _matches(path, name)]
            if not hits:
                continue
            unmatched.difference_update(hits)
            for layer_path, layer in _layers_under(path, module):
                target = _target(component, layer_path, layer, config, layout)
                if target is not None:
                    targets.setdefault(target.key, target)
    full_words = {word for word in config.full_if_contains if not any(_full_match(t.key, [word]) for t in targets.values())}
    if full_words:
        raise EaselError(f"network.full_if_contains: {', '.join(sorted(full_words))} match no layer the network wraps "
                         f"(e.g. {', '.join(list(targets)[:4])}). A layer trained in full must be one of its targets.")
    if unmatched:
        examples = [path for comp in names for path, m in walk(components[comp]) if layer_kind(m)][:8]
        raise EaselError(f"network.target_modules: {', '.join(sorted(unmatched))} match no module in "
                         f"{', '.join(names)}. Names are module paths or their endings, e.g. {', '.join(examples)}.")
    if not targets:
        raise EaselError("the network wraps no layer: the targets, network.ignore_if_contains / only_if_contains "
                         "and the conv setting leave nothing. Loosen the filters or set network.conv for convolutions.")
    return list(targets.values())


def _target(component: str, path: str, layer: "nn.Module", config: "NetworkConfig",
            layout: NetworkLayout | None) -> Target | None:
    key = f"{component}.{path}"
    if any(word in key for word in config.ignore_if_contains):
        return None
    if config.only_if_contains and not any(word in key for word in config.only_if_contains):
        return None
    kind = layer_kind(layer)
    denoiser = layout is not None and component == layout.denoiser
    if denoiser and config.transformer_only and layout.transformer_blocks and not any(
            path == block or path.startswith(block + ".") for block in layout.transformer_blocks):
        return None
    if kind is not None and _full_match(key, config.full_if_contains):
        return Target(component, path, layer, kind, 0, 0.0, full=True)
    rank_alpha = _rank_alpha(kind, config, layout.block_of(path) if denoiser and layout.block_of else None)
    if kind is None or rank_alpha is None:
        return None
    return Target(component, path, layer, kind, *rank_alpha)


def _full_match(key: str, words: list[str]) -> bool:
    """ai-toolkit's test: a word in the dotted name or in its kohya spelling (dots as underscores)."""
    flat = key.replace(".", "_")
    return any(word in key or word in flat for word in words)


def _rank_alpha(kind: str | None, config: "NetworkConfig", block: int | None) -> tuple[int, float] | None:
    """(rank, alpha) of a layer: kohya's per-block values when given for its block, else the network's; None: not wrapped."""
    if kind == "linear":
        ranks, alphas, rank, alpha = config.block_dims, config.block_alphas, config.linear, config.linear_alpha
    elif kind == "conv":
        ranks, alphas, rank, alpha = config.conv_block_dims, config.conv_block_alphas, config.conv, config.conv_alpha
    else:
        return None
    if ranks is not None and block is not None:
        rank = int(ranks[block])
        alpha = alphas[block] if alphas is not None else (alpha if kind == "linear" or config.conv else rank)
    if not rank:
        return None
    return int(rank), float(alpha or rank)
