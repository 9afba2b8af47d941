"""Qwen-Image-Edit and -Edit-Plus: the shared suite (prompts without references are Qwen-Image's), reference images as
the edit pipelines read them (text encoder and appended latents), and edit-pair training through run.py."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from extensions.qwen_image.edit import QwenImageEditAdapter, dimensions
from extensions.qwen_image.test_qwen_image import QwenImageSuite, pack
from toolkit.errors import EaselError
from toolkit.models.pipeline_adapter import pil_to_pixels


def reference(width: int = 1024, height: int = 1024) -> Image.Image:
    """A reference at the pipelines' own megapixel size (so both paths see the same pixels)."""
    image = Image.new("RGB", (width, height), (200, 40, 40))
    image.paste((40, 40, 220), (width // 4, height // 4, width // 2, height // 2))
    return image


class TestQwenImageEdit(QwenImageSuite):
    arch = "qwen_image_edit"

    def test_a_reference_reads_as_the_pipeline_reads_it(self, adapter: QwenImageEditAdapter) -> None:
        """The prompt row with its reference is the pipeline's, vision tokens included; the reference latents go to
        ``with_references`` under their slot's key; without a reference the row is Qwen-Image's."""
        ref, prompt = reference(), "make the square green"
        with torch.no_grad():
            cond = adapter.encode_prompts([prompt, "a cat"], references=[[pil_to_pixels([ref])[0]], []])
            embeds, mask = adapter.pipeline().encode_prompt(prompt, image=self.text_images(adapter, ref), device=adapter.device)
            plain = adapter.encode_prompts(["a cat"])
        rows = cond["prompt_mask"].sum(dim=1)
        expected = embeds[0] if mask is None else embeds[0][mask[0].bool()]
        assert int(rows[0]) == len(expected) > 300 and torch.allclose(cond["prompt_embeds"][0][: int(rows[0])], expected, atol=1e-5)
        assert torch.equal(cond["prompt_embeds"][1], plain["prompt_embeds"][0])
        latents = torch.zeros(1, 16, 128, 128)
        assert adapter.reference_latents(adapter.with_references({}, [latents])) == [latents]

    def text_images(self, adapter: Any, ref: Image.Image) -> Any:
        return ref

    @pytest.mark.slow
    def test_predict_with_references_is_the_velocity_the_edit_pipeline_steps_with(self, adapter: QwenImageEditAdapter) -> None:
        """Euler steps over ``predict`` with the reference's latents appended reproduce the edit pipeline's latents."""
        steps, prompt, ref = 2, "make the square green", reference()
        noise = torch.randn(1, 16, 6, 8, generator=torch.Generator().manual_seed(5))
        pipe = adapter.pipeline()
        with torch.no_grad():
            expected = pipe(image=self.pipeline_images(ref), prompt=prompt, height=48, width=64, num_inference_steps=steps,
                            true_cfg_scale=1.0, latents=pack(noise), output_type="latent").images
            sigmas = pipe.scheduler.sigmas.tolist()
            pixels = pil_to_pixels([ref])
            cond = adapter.with_references(adapter.encode_prompts([prompt], references=[[pixels[0]]]),
                                           [adapter.encode_images(pixels)])
            latents = noise.clone()
            for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
                latents = latents + (sigma_next - sigma) * adapter.predict(latents, torch.tensor([sigma * 1000.0]), cond)
        assert torch.allclose(pack(latents), expected, atol=1e-4)

    def pipeline_images(self, ref: Image.Image) -> Any:
        return ref

    @pytest.mark.slow  # runs fast for Edit-Plus below
    def test_requests_with_references_use_the_edit_pipeline_one_at_a_time(self, adapter: QwenImageEditAdapter) -> None:
        calls: list[int] = []
        hook = adapter.denoiser.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs["hidden_states"].shape[1]),
                                                     with_kwargs=True)
        small = reference(64, 48)
        try:
            images = adapter.generate([self.request(), self.request(references=[small]), self.request(seed=8)])
        finally:
            hook.remove()
        side = dimensions(1024 * 1024, 64 / 48)
        assert [image.size for image in images] == [self.size] * 3
        assert calls == [12] * 2 + [12 + (side[0] // 16) * (side[1] // 16)] * 2 + [12] * 2  # the reference at a megapixel
        with pytest.raises(EaselError, match="at least 2"):
            adapter.generate([self.request(steps=1)])


class TestQwenImageEditPlus(TestQwenImageEdit):
    arch = "qwen_image_edit_plus"

    def text_images(self, adapter: Any, ref: Image.Image) -> Any:
        width, height = dimensions(384 * 384, ref.width / ref.height)
        return [adapter.pipeline().image_processor.resize(ref, height, width)]

    def pipeline_images(self, ref: Image.Image) -> Any:
        return [ref]

    def test_requests_with_references_use_the_edit_pipeline_one_at_a_time(self, adapter: QwenImageEditAdapter) -> None:
        super().test_requests_with_references_use_the_edit_pipeline_one_at_a_time(adapter)

    def test_variants_name_the_hub_models(self, registry: Any) -> None:
        from extensions.qwen_image.edit import QwenImageEditPlusAdapter

        assert registry.arch("qwen_image_edit_plus").name == "qwen_image_edit_plus"
        later = registry.arch("qwen_image_edit_plus:2511")
        assert QwenImageEditPlusAdapter.base_for(later) == "Qwen/Qwen-Image-Edit-2511"
        assert later.spec.references is not None and later.spec.references.count == 3


def pairs(folder: Path, count: int = 4) -> tuple[Path, Path]:
    """Edit pairs: targets (a blue square on red) in ``targets/``, their references (the same, square moved) in
    ``controls/``, paired by file name; captions say what changed."""
    targets, controls = folder / "targets", folder / "controls"
    for path in (targets, controls):
        path.mkdir(parents=True)
    for index in range(count):
        target, control = Image.new("RGB", (64, 48), (200, 40, 40)), Image.new("RGB", (80, 80), (200, 40, 40))
        target.paste((40, 40, 220), (8 + 4 * index, 8, 32 + 4 * index, 32))
        control.paste((40, 40, 220), (40, 40, 70, 70))
        target.save(targets / f"{index}.png")
        control.save(controls / f"{index}.jpg")
        (targets / f"{index}.txt").write_text(f"move the square to the left, number {index}")
    return targets, controls


@pytest.mark.slow
def test_edit_pairs_train_and_preview_with_their_reference(registry: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Qwen-Image-Edit-Plus on edit pairs through run.py: references cached with the targets (latents) and in the text
    rows, appended to every training step's tokens, a preview edits its ctrl_img, the LoRA moves every layer."""
    import run
    from safetensors.torch import load_file

    from extensions.qwen_image.edit import QwenImageEditPlusAdapter

    seen: list[tuple[int, ...]] = []
    original = QwenImageEditPlusAdapter.reference_latents
    monkeypatch.setattr(QwenImageEditPlusAdapter, "reference_latents",
                        lambda self, cond: seen.append(tuple(x.shape[-1] for x in original(self, cond))) or original(self, cond))

    targets, controls = pairs(tmp_path)
    process = {
        "type": "lora_trainer", "training_folder": str(tmp_path / "out"), "device": "cpu",
        "network": {"type": "lora", "linear": 4, "linear_alpha": 4}, "save": {"dtype": "fp32"},
        "datasets": [{"folder_path": str(targets), "control_path": str(controls), "resolution": [64],
                      "cache_latents_to_disk": True}],
        "train": {"steps": 3, "batch_size": 2, "lr": 5e-3, "dtype": "fp32", "cache_text_embeddings": True,
                  "gradient_checkpointing": True, "skip_first_sample": True},
        "model": {"name_or_path": "tiny:qwen_image_edit_plus", "arch": "qwen_image_edit_plus:2511"},
        "sample": {"sample_every": 100, "width": 64, "height": 48, "sample_steps": 2,
                   "samples": [{"prompt": "move the square", "ctrl_img": str(controls / "0.jpg")}]},
    }
    path = tmp_path / "edit.json"
    path.write_text(json.dumps({"job": "extension", "config": {"name": "edit", "process": [process]}}))
    assert run.main([str(path)]) == 0
    folder = tmp_path / "out" / "edit"
    log = (folder / "log.txt").read_text()
    assert "text cache: 4 of 4 captions encoded" in log and "latent cache: 5 of 5 image variants encoded" in log
    assert "references: 1 per image" in log and "the text encoder reads them too" in log
    assert seen[:3] == [(128,)] * 3  # each step's reference: 80 x 80 px at a megapixel = 1024 px, 128 latent pixels
    lora = load_file(str(folder / "edit.safetensors"))
    assert all(value.abs().sum() > 0 for key, value in lora.items() if key.endswith("lora_B.weight"))
    assert [p.name for p in sorted((folder / "samples").glob("*.png"))] == ["000000003_00.png"]


@pytest.mark.slow
def test_the_generate_job_edits_its_reference_images(tmp_path: Path) -> None:
    """``generate.reference_images`` with two files: both edited together by each prompt, at the first one's aspect."""
    import run
    from toolkit.output import dump_yaml

    for name, colour in (("a", (200, 40, 40)), ("b", (40, 200, 40))):
        Image.new("RGB", (48, 64), colour).save(tmp_path / f"{name}.png")
    body = {"job": "generate", "config": {"name": "gen", "process": [{
        "type": "to_folder", "output_folder": str(tmp_path / "gen"), "device": "cpu",
        "model": {"name_or_path": "tiny:qwen_image_edit_plus", "arch": "qwen_image_edit_plus"},
        "generate": {"width": 64, "height": 48, "sample_steps": 2, "seed": 3, "prompts": ["picture 1 in picture 2"],
                     "reference_images": [str(tmp_path / "a.png"), str(tmp_path / "b.png")]},
    }]}}
    (tmp_path / "gen.yaml").write_text(dump_yaml(body), encoding="utf-8")
    assert run.main([str(tmp_path / "gen.yaml")]) == 0
    (image,) = sorted((tmp_path / "gen").glob("*.png"))
    assert Image.open(image).size == (48, 64)
