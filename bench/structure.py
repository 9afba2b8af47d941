"""Structure kept (edge agreement of output and input) of plain img2img against img2img with a canny ControlNet.

Run (CPU, tiny random models and ControlNets): python bench/structure.py
Real weights (a GPU and the models in the hub cache):
    python bench/structure.py --arch sd15 --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --controlnet lllyasviel/control_v11p_sd15_canny --input photo.png --size 512 --steps 25 --device cuda

Images are made by ``toolkit.eval.generation.generate_images`` (what the evaluate job calls) and scored with
``toolkit.control.edges.edge_agreement`` (Canny F1 with a 2 px tolerance; 1 = the same edges). Without ``--input`` the
input is a drawn square and disc; without ``--model`` each architecture's tiny model gets a tiny random ControlNet
from its spec's builder, so those numbers show the plumbing, not what trained ControlNets do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", help="architecture(s) (default: every one that takes ControlNets)")
    parser.add_argument("--model", help="base model (hub id or path; default: the tiny one)")
    parser.add_argument("--controlnet", help="canny ControlNet (default: a tiny random one)")
    parser.add_argument("--input", help="input image (default: a drawn square and disc)")
    parser.add_argument("--strengths", default="0.6,0.9,1.0")
    parser.add_argument("--scales", default="1,2", help="ControlNet scales to compare with plain img2img")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    from toolkit.registry import Registry

    args = parse_args(argv)
    registry = Registry.discover(("jobs",), ROOT / "extensions")
    archs = args.arch or sorted({spec.name for spec in registry.archs.values() if spec.controlnet is not None})
    scales = [float(s) for s in args.scales.split(",")]
    print("| architecture | strength | plain img2img | " + " | ".join(f"ControlNet scale {s:g}" for s in scales) + " |")
    print("|---" * (3 + len(scales)) + "|")
    with tempfile.TemporaryDirectory(prefix="easel-structure-") as folder:
        work = Path(folder)
        source = Path(args.input) if args.input else _drawn(work / "input.png", args.size)
        for name in archs:
            for line in _rows(registry, name, args, source, work, scales):
                print(line)
    print(f"rerun: python bench/structure.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    return 0


def _rows(registry: Any, name: str, args: argparse.Namespace, source: Path, work: Path, scales: list[float]) -> list[str]:
    """One table row per strength: the mean structure kept without and with the ControlNet at each scale."""
    from toolkit.config.blocks import ModelConfig
    from toolkit.config.control import ControlNetConfig
    from toolkit.control.edges import edge_agreement
    from toolkit.data.images import load_image
    from toolkit.eval.generation import GenerationSettings, generate_images, release_models
    from toolkit.models.tiny import tiny_builder, tiny_folder
    from toolkit.registry import load_object

    arch = registry.arch(name)
    model = args.model or str(tiny_folder(arch.spec.name, tiny_builder(arch)))
    controlnet = args.controlnet
    if controlnet is None:
        controlnet = str(work / f"{arch.spec.name}_controlnet")
        load_object(arch.spec.controlnet.tiny)(Path(model), Path(controlnet), 3)
    settings = GenerationSettings(registry=registry, device=args.device, width=args.size, height=args.size, steps=args.steps,
                                  guidance_scale=1.0, sampler=arch.spec.samplers[0])
    config, seeds, rows = ModelConfig(name_or_path=model, arch=name), list(range(1, args.seeds + 1)), []
    for strength in (float(s) for s in args.strengths.split(",")):
        cells = []
        for scale in (None, *scales):
            nets = [] if scale is None else [ControlNetConfig(path=controlnet, preprocess="canny", scale=scale)]
            images = generate_images(config, [], ["a painting"], seeds, settings, inputs=[source], strength=strength, controlnets=nets)
            cells.append(sum(edge_agreement(load_image(source), image) for image in images) / len(images))
        rows.append(f"| {name} | {strength:g} | " + " | ".join(f"{cell:.3f}" for cell in cells) + " |")
    release_models()
    return rows


def _drawn(path: Path, size: int) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([size // 8, size // 4, size // 2, 3 * size // 4], fill=(30, 30, 30))
    draw.ellipse([size // 2, size // 8, 7 * size // 8, size // 2], fill=(220, 40, 40))
    image.save(path)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
