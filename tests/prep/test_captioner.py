"""Loading image-to-text models through the real loading code, and captioning with them (tiny random models)."""

import pytest
import torch

from tests.prep_images import scene
from toolkit.errors import EaselError
from toolkit.prep.captioner import Captioner, _strip_prompt, caption_images, load_captioning_model

CPU = torch.device("cpu")


def _load(folder):
    return load_captioning_model(str(folder), device=CPU, dtype=torch.float32)


def test_blip_loads_with_its_processor(tiny_blip):
    model, processor = _load(tiny_blip)
    assert type(model).__name__ == "BlipForConditionalGeneration" and not model.training
    assert type(processor).__name__ == "BlipProcessor"
    assert type(processor.image_processor).__name__ == "BlipImageProcessorPil"


def test_blip_captions_one_per_image_deterministically(tiny_blip):
    captioner = Captioner(*_load(tiny_blip), max_new_tokens=6, generate_kwargs={"min_new_tokens": 2})
    images = [scene(0), scene(1, (50, 80)), scene(2, (120, 40))]
    first = captioner.caption(images)
    assert len(first) == 3 and all(isinstance(c, str) and c for c in first)
    assert all("\n" not in c and "[SEP]" not in c and "[CLS]" not in c for c in first)
    assert captioner.caption(images) == first


def test_blip_prompt_is_removed_or_kept(tiny_blip):
    model, processor = _load(tiny_blip)
    kwargs = dict(prompt="a photo of", max_new_tokens=5, generate_kwargs={"min_new_tokens": 2})
    stripped = Captioner(model, processor, keep_prompt=False, **kwargs).caption([scene(0)])[0]
    kept = Captioner(model, processor, keep_prompt=True, **kwargs).caption([scene(0)])[0]
    assert kept == f"a photo of {stripped}".strip()
    assert stripped


def test_blip2_decoder_only_output_drops_the_prompt_tokens(tiny_blip2):
    model, processor = _load(tiny_blip2)
    assert type(model).__name__ == "Blip2ForConditionalGeneration"
    captioner = Captioner(model, processor, prompt="Question: what is shown? Answer:", max_new_tokens=4,
                          generate_kwargs={"min_new_tokens": 4})
    captions = captioner.caption([scene(0), scene(1)])
    assert len(captions) == 2
    assert all("Question" not in c and "<image>" not in c for c in captions)
    unconditional = Captioner(model, processor, max_new_tokens=4, generate_kwargs={"min_new_tokens": 4}).caption([scene(0)])
    assert len(unconditional) == 1 and unconditional[0]


def test_florence2_gets_its_task_prompt_by_default(tiny_florence2):
    model, processor = _load(tiny_florence2)
    assert type(model).__name__ == "Florence2ForConditionalGeneration"
    captioner = Captioner(model, processor, max_new_tokens=4, generate_kwargs={"min_new_tokens": 3})
    assert captioner.prompt == "<MORE_DETAILED_CAPTION>"
    captions = captioner.caption([scene(0), scene(4)])
    assert len(captions) == 2 and all(captions)


def test_generic_model_without_a_processor_class_gets_one_built(tiny_vit_gpt2):
    # a VisionEncoderDecoder repository (like nlpconnect/vit-gpt2-image-captioning): AutoProcessor alone
    # returns just the tokenizer, which cannot read images
    model, processor = _load(tiny_vit_gpt2)
    assert type(model).__name__ == "VisionEncoderDecoderModel"
    assert type(processor.image_processor).__name__ == "ViTImageProcessorPil" and not processor.takes_prompt
    captioner = Captioner(model, processor, max_new_tokens=4, generate_kwargs={"min_new_tokens": 3})
    captions = captioner.caption([scene(0), scene(1, (40, 60))])
    assert len(captions) == 2 and all(captions) and captioner.caption([scene(0)]) == captions[:1]
    with pytest.raises(ValueError, match="no prompt"):
        processor([scene(0)], text=["a photo of"])


def test_git_captions_with_and_without_a_prompt(tiny_git):
    # GIT's BertTokenizer returns token_type_ids, which its generate does not take
    model, processor = _load(tiny_git)
    assert type(model).__name__ == "GitForCausalLM"
    kwargs = dict(max_new_tokens=3, generate_kwargs={"min_new_tokens": 3})
    assert all(Captioner(model, processor, **kwargs).caption([scene(0), scene(1)]))
    stripped = Captioner(model, processor, prompt="a photo of", **kwargs).caption([scene(0)])[0]
    assert stripped and not stripped.startswith("a photo of")


def test_caption_images_batches_and_reports_bad_files(tiny_blip, tmp_path):
    paths = []
    for i in range(5):
        scene(i).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    (tmp_path / "bad.png").write_bytes(b"nope")
    paths.insert(2, tmp_path / "bad.png")
    captioner = Captioner(*_load(tiny_blip), max_new_tokens=3)
    results = list(caption_images(captioner, paths, batch_size=2))
    assert [path.name for path, _, _ in results] == ["0.png", "1.png", "bad.png", "2.png", "3.png", "4.png"]
    assert {path.name: problem for path, caption, problem in results if caption is None} == {"bad.png": "not an image"}
    batch_of_one = {path: caption for path, caption, _ in caption_images(captioner, paths, batch_size=1)}
    assert {path: caption for path, caption, _ in results} == batch_of_one


def test_not_a_captioning_model_is_a_user_error(tiny_clip):
    with pytest.raises(EaselError, match="not an image-to-text model"):
        _load(tiny_clip)


def test_missing_or_unknown_model_is_a_user_error(tmp_path):
    with pytest.raises(EaselError, match="cannot load the captioning model"):
        _load(tmp_path / "nowhere")
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"model_type": "no_such_model_type"}')
    with pytest.raises(EaselError, match="cannot load the captioning model"):
        _load(tmp_path / "odd")


def test_strip_prompt():
    assert _strip_prompt("a photography of a woman", "A photography of") == "a woman"
    assert _strip_prompt("a dog", "a photography of") == "a dog"
    assert _strip_prompt("a  photography\nof it", "a photography of") == "it"
    assert _strip_prompt(" two\n lines ", "") == "two lines"
