"""The ``network`` block: the adapter that is trained (kind, rank, alpha, which modules), with ai-toolkit's
``network_kwargs`` sub-block (module filters, dropouts, kohya's per-block ranks)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, BeforeValidator, Field, model_validator

from toolkit.config.base import Block, lowercase

NetworkType = lowercase(Literal["lora", "locon", "lokr", "loha", "dora"])
BLOCKS = 25
"""kohya's UNet blocks for per-block ranks: IN00-IN11, MID, OUT00-OUT11."""


def _block_values(value: Any) -> Any:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if value is not None and len(value) != BLOCKS:
        raise ValueError(f"needs {BLOCKS} values (IN00-IN11, MID, OUT00-OUT11), got {len(value)}")
    return value


BlockValues = Annotated[list[float] | None, BeforeValidator(_block_values)]


def _words(value: Any) -> Any:
    """ai-toolkit writes one string, a list, or null."""
    return [] if value is None else [value] if isinstance(value, str) else value


Words = Annotated[list[str], BeforeValidator(_words)]


class NetworkKwargs(Block):
    """ai-toolkit's ``network_kwargs`` sub-block."""

    block_name: ClassVar[str] = "network.network_kwargs"
    aitoolkit: ClassVar[bool] = True

    ignore_if_contains: list[str] = []
    """Skip modules whose name contains any of these strings."""
    only_if_contains: list[str] = []
    """If set, wrap only modules whose name contains one of these strings."""
    full_if_contains: Words = []
    """Same as ``network.full_if_contains`` (the two lists are joined)."""
    rank_dropout: float | None = Field(None, ge=0, lt=1)
    """ai-toolkit / kohya spelling of ``network.rank_dropout``."""
    module_dropout: float | None = Field(None, ge=0, le=1)
    """ai-toolkit / kohya spelling of ``network.module_dropout``."""
    peft_format: bool = False
    """ai-toolkit's PEFT file layout: alpha is the rank (scale 1, whatever ``linear_alpha`` says) and, unless
    ``save.format`` is set, the file has diffusers/PEFT keys (``lora_A`` / ``lora_B``)."""
    block_dims: BlockValues = None
    """ai-toolkit / kohya spelling of ``network.block_dims``."""
    block_alphas: BlockValues = None
    """ai-toolkit / kohya spelling of ``network.block_alphas``."""
    conv_block_dims: BlockValues = None
    """ai-toolkit / kohya spelling of ``network.conv_block_dims``."""
    conv_block_alphas: BlockValues = None
    """ai-toolkit / kohya spelling of ``network.conv_block_alphas``."""


SHARED_WITH_KWARGS = ("rank_dropout", "module_dropout", "block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
"""Keys that may be written in ``network`` or in ai-toolkit's ``network.network_kwargs``."""


class NetworkConfig(Block):
    """The adapter that is trained: its kind, rank and alpha, and which modules it wraps."""

    block_name: ClassVar[str] = "network"
    aitoolkit: ClassVar[bool] = True

    type: NetworkType = "lora"
    """Adapter kind: lora, locon (LoRA on convolutions too), lokr, loha or dora."""
    linear: int = Field(16, ge=1, validation_alias=AliasChoices("linear", "rank"))
    """Rank of the adapter on linear layers (``rank`` is accepted too)."""
    linear_alpha: float | None = Field(None, gt=0, validation_alias=AliasChoices("linear_alpha", "alpha"))
    """Alpha of linear layers; the update is scaled by alpha/rank. Default: equal to the rank."""
    conv: int | None = Field(None, ge=1)
    """Rank on 3x3 convolutions (LoCon). Unset: they are not trained. 1x1 convolutions count as linear layers (as in kohya)."""
    conv_alpha: float | None = Field(None, gt=0)
    """Alpha of convolution layers. Default: equal to ``conv``."""
    target_modules: list[str] | None = None
    """Module names (or name suffixes) to wrap, overriding the architecture's defaults."""
    ignore_if_contains: list[str] = []
    """Skip modules whose name contains any of these strings."""
    only_if_contains: list[str] = []
    """If set, wrap only modules whose name contains one of these strings."""
    full_if_contains: Words = []
    """Layers of the targets whose name (dotted, or with underscores as kohya spells it) contains one of these strings
    train a full weight difference (``diff`` / ``diff_b`` in the file, as ai-toolkit and LyCORIS write it) instead of a
    low-rank adapter; a 3x3 convolution among the targets counts even without ``conv``. A word that matches no target
    is an error. ComfyUI, AUTOMATIC1111 and easel apply such files; diffusers' ``load_lora_weights`` refuses them.
    Norm layers are not trained this way (ai-toolkit's ``all_layers`` is refused)."""
    network_kwargs: NetworkKwargs | None = None
    """ai-toolkit's sub-block of network settings (module filters, dropouts, ...); merged into the keys here."""
    dropout: float | None = Field(None, ge=0, le=1)
    """Dropout in the adapter during training, 0 to 1 (LoRA/DoRA: on its input; LoHa/LoKr: on its output)."""
    rank_dropout: float | None = Field(None, ge=0, lt=1)
    """While training, drop each rank component of each sample's update with this probability (the rest scaled by
    1 / (1 - p), as kohya does)."""
    module_dropout: float | None = Field(None, ge=0, le=1)
    """While training, leave a whole adapter module out of a forward pass with this probability."""
    transformer_only: bool = True
    """With the architecture's default targets: adapt only the denoiser's main transformer blocks where it names them
    (Z-Image: ``layers.*``, not the noise / context refiners); no effect on UNets or on ``target_modules``.
    ai-toolkit's default."""
    block_dims: BlockValues = None
    """kohya's per-block ranks of a UNet's linear layers: 25 values for IN00-IN11, MID, OUT00-OUT11 (0: no adapter
    in that block); a list or "4,4,8,...". Other components keep ``linear``."""
    block_alphas: BlockValues = None
    """Per-block alphas to go with ``block_dims``; default ``linear_alpha`` everywhere."""
    conv_block_dims: BlockValues = None
    """Per-block ranks of a UNet's 3x3 convolutions (wraps them even without ``conv``)."""
    conv_block_alphas: BlockValues = None
    """Per-block alphas to go with ``conv_block_dims``; default ``conv_alpha`` (or the block's rank)."""
    lokr_factor: int = -1
    """LoKr: the Kronecker factor; -1 picks the most balanced factorisation."""
    lokr_full_rank: bool = False
    """LoKr: train the second Kronecker factor at full rank."""
    pretrained_lora_path: str | None = None
    """Start from this existing LoRA file instead of a fresh adapter."""

    @model_validator(mode="after")
    def _fill_defaults(self) -> "NetworkConfig":
        kwargs = self.network_kwargs
        if kwargs is not None:
            self.ignore_if_contains = [*self.ignore_if_contains, *kwargs.ignore_if_contains]
            self.only_if_contains = [*self.only_if_contains, *kwargs.only_if_contains]
            self.full_if_contains = [*self.full_if_contains, *kwargs.full_if_contains]
            for name in SHARED_WITH_KWARGS:
                if getattr(kwargs, name) is not None and getattr(self, name) is not None:
                    raise ValueError(f"{name} is set both here and in network_kwargs; keep one")
                setattr(self, name, getattr(self, name) if getattr(kwargs, name) is None else getattr(kwargs, name))
        peft = kwargs is not None and kwargs.peft_format
        if self.linear_alpha is None or peft:
            self.linear_alpha = float(self.linear)
        if self.conv is not None and (self.conv_alpha is None or peft):
            self.conv_alpha = float(self.conv)
        return self
