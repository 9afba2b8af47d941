"""Preview requests: inline prompt flags beat per-sample fields, which beat the sample block and the variant."""

import pytest

from toolkit.config.sample import SampleConfig, SampleItem
from toolkit.config.job import load_job_config
from toolkit.errors import ConfigError
from toolkit.train.sampling import preview_requests


def test_flags_fields_block_and_variant_defaults_in_that_order(registry):
    sample = SampleConfig(prompts=["a cat --seed 9 --w 96 --cfg 3 --n dark"], seed=40, walk_seed=True, width=64, height=48,
                          samples=[SampleItem(prompt="a dog", width=80, sample_steps=5, neg="blur"), SampleItem(prompt="a cow")])
    cat, dog, cow = (p.request for p in preview_requests(sample, registry.arch("zimage:turbo")))
    assert (cat.prompt, cat.seed, cat.width, cat.height, cat.guidance_scale, cat.negative_prompt) == ("a cat", 9, 96, 48, 3.0, "dark")
    assert (dog.seed, dog.width, dog.steps, dog.negative_prompt, dog.guidance_scale) == (41, 80, 5, "blur", 1.0)
    assert (cow.seed, cow.width, cow.steps, cow.sampler) == (42, 64, 8, "flowmatch")


@pytest.mark.parametrize("prompt,fragment", [
    ("a cat --size 3", "unknown flag --size"),
    ("a cat --w wide", "--w needs a whole number"),
    ("a cat <lora:other:0.5>", "preview prompts cannot load other LoRAs"),
])
def test_bad_preview_prompts_are_config_errors(tmp_path, registry, prompt, fragment):
    config = tmp_path / "c.yaml"
    config.write_text("job: extension\nconfig:\n  name: n\n  process:\n    - type: lora_trainer\n"
                      "      datasets: [{folder_path: /tmp}]\n      model: {name_or_path: x, arch: sd15}\n"
                      f"      sample:\n        prompts:\n          - \"{prompt}\"\n")
    with pytest.raises(ConfigError) as caught:
        load_job_config(config, registry)
    assert "line 10" in str(caught.value) and "sample.prompts[0]" in str(caught.value) and fragment in str(caught.value)
