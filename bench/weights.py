"""Expected weight memory of the full-size denoisers and text encoders, computed on PyTorch's ``meta`` device (shapes
only: no GPU, no download) from the configs in ``bench/fullsize.py`` and each architecture's quantization exclusions.

Run:  python bench/weights.py                # the table of docs/PERFORMANCE.md ("Expected weight memory")

Per model: parameters; the quantized share (parameters in the ``nn.Linear`` layers that ``model.quantize`` converts,
i.e. all but those the adapter's ``quantize_exclusions`` keep; text encoders: every linear but the token embedding and
LM head (model.quantize_te converts it too where it is untied)); bf16 = 2 bytes per parameter; 8-bit = 1 byte per quantized weight
(per-channel scales are negligible) + 2 per other parameter; 4-bit = half a byte per quantized weight plus a bf16 scale
per 64 weights (bitsandbytes' NF4 block size) + 2 per other parameter. Real loads measure slightly more (buffers,
allocator rounding): the GPU rows of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import DENOISERS, QWEN3_4B, QWEN3_8B, QWEN25_VL_7B, T5_XXL, markdown_table  # noqa: E402

GIB = 2 ** 30
TEXT_ENCODERS = {"Qwen3-4B text encoder (Z-Image, FLUX.2 klein 4B)": ("Qwen3Model", "Qwen3Config", {**QWEN3_4B, "vocab_size": 151936}),
                 "Qwen3-8B text encoder (FLUX.2 klein 9B)": ("Qwen3ForCausalLM", "Qwen3Config", {**QWEN3_8B, "vocab_size": 151936}),
                 "T5-XXL encoder (FLUX.1)": ("T5EncoderModel", "T5Config", T5_XXL),
                 "Qwen2.5-VL-7B text encoder (Qwen-Image; vision tower included)": (
                     "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLConfig", QWEN25_VL_7B)}
ROWS = ("zimage", "sdxl", "flux", "flux2_klein_4b", "flux2_klein_9b", "flux2", "qwen_image")


def on_meta(build: Any) -> Any:
    import torch

    with torch.device("meta"):
        return build()


def counts(model: Any, exclude: tuple[str, ...]) -> tuple[int, int, int, int]:
    """(parameters, quantized weights, quantized linears, kept linears) as ``toolkit.quantize`` would choose them."""
    from toolkit.quantize import linear_layers

    chosen, kept = linear_layers(model, exclude)
    quantized = sum(layer.weight.numel() for _, layer in chosen)
    return sum(p.numel() for p in model.parameters()), quantized, len(chosen), kept


def row(name: str, total: int, quantized: int, linears: int, kept: int) -> list[str]:
    rest = 2 * (total - quantized)
    eight, four = quantized + rest, quantized / 2 + quantized / 64 * 2 + rest
    kept_text = f", {kept} kept" if kept else ""
    return [name, f"{total / 1e9:.3f} B", f"{quantized / total:.1%} ({linears} linears{kept_text})", f"{2 * total / GIB:.2f} GiB",
            f"~{eight / GIB:.1f} GiB", f"~{four / GIB:.1f} GiB"]


def denoiser_row(arch: str) -> list[str]:
    import diffusers

    from toolkit.registry import load_object

    label, class_name, config, _, adapter = DENOISERS[arch]
    model = on_meta(lambda: getattr(diffusers, class_name)(**config))
    names = {"sdxl": "SDXL UNet", "zimage": "Z-Image transformer"}
    return row(names.get(arch, f"{label} transformer"), *counts(model, load_object(adapter).quantize_exclusions))


def text_encoder_row(name: str) -> list[str]:
    import transformers

    model_class, config_class, config = TEXT_ENCODERS[name]
    model = on_meta(lambda: getattr(transformers, model_class)(getattr(transformers, config_class)(**config)))
    total, quantized, linears, kept = counts(model, ())  # model.quantize_te keeps nothing
    return row(name, total, quantized, linears, kept)


def table() -> str:
    """The markdown table of docs/PERFORMANCE.md."""
    rows = [denoiser_row(arch) for arch in ROWS] + [text_encoder_row(name) for name in TEXT_ENCODERS]
    return markdown_table(["model", "parameters", "quantized share", "bf16", "8-bit", "4-bit"], rows)


def main() -> int:
    print(table())
    print("\nrerun: python bench/weights.py")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
