"""ai-toolkit's spellings are read as ours: process type aliases and legacy key names."""

import pytest

from toolkit.config.job import load_job_config


@pytest.mark.parametrize("kind", ["sd_trainer", "diffusion_trainer", "lora_trainer"])
def test_legacy_spellings_are_read_as_ours(kind, registry, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(f"job: extension\nconfig:\n  name: n\n  process:\n    - type: {kind}\n"
                      "      datasets: [{folder_path: /tmp}]\n      model: {name_or_path: x, arch: sd15}\n"
                      "      network: {rank: 4, alpha: 2}\n      train: {gradient_accumulation_steps: 3}\n")
    process = load_job_config(config, registry).processes[0]
    assert process.type == "lora_trainer"
    assert (process.train.gradient_accumulation, process.network.linear, process.network.linear_alpha) == (3, 4, 2)


def test_peft_format_trains_at_alpha_rank_and_writes_peft_keys(registry, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("job: extension\nconfig:\n  name: n\n  process:\n    - type: sd_trainer\n"
                      "      datasets: [{folder_path: /tmp}]\n      model: {name_or_path: x, arch: zimage}\n"
                      "      network: {linear: 8, linear_alpha: 2, conv: 4, conv_alpha: 1, network_kwargs: {peft_format: true}}\n")
    process = load_job_config(config, registry).processes[0]
    assert (process.network.linear_alpha, process.network.conv_alpha, process.save.format) == (8.0, 4.0, "diffusers")
    config.write_text(config.read_text() + "      save: {format: comfy}\n")
    assert load_job_config(config, registry).processes[0].save.format == "comfy"


@pytest.mark.parametrize("train,extra,message", [
    ({"diff_output_preservation": True}, "", "needs a trigger_word"),
    ({"diff_output_preservation": True, "blank_prompt_preservation": True}, "      trigger_word: sks\n", "not both"),
    ({"blank_prompt_preservation": True, "train_text_encoder": True}, "", "cannot be used with train_text_encoder"),
    ({"inverted_mask_prior": True}, "", "needs a dataset with mask_path or alpha_mask"),
])
def test_preservation_needs_what_it_reads(train, extra, message, registry, tmp_path):
    import json

    from toolkit.errors import ConfigError

    config = tmp_path / "c.yaml"
    config.write_text("job: extension\nconfig:\n  name: n\n  process:\n    - type: sd_trainer\n" + extra +
                      "      datasets: [{folder_path: /tmp}]\n      model: {name_or_path: x, arch: sd15}\n"
                      f"      train: {json.dumps(train)}\n")
    with pytest.raises(ConfigError, match=message):
        load_job_config(config, registry)
