"""docs/config.md is generated from the models; it must be current, and every key documented."""


from pydantic import BaseModel

from toolkit.config import docs
from toolkit.config.job import JobFile
from toolkit.registry import load_object

from tests.conftest import ROOT


def all_models(registry) -> list[type[BaseModel]]:
    models = [JobFile, *docs._nested_models(JobFile)]
    models += [load_object(job.body) for job in registry.jobs.values() if job.body]
    for spec in registry.processes.values():
        model = load_object(spec.config)
        models += [model, *docs._nested_models(model)]
    return list(dict.fromkeys(models))


def test_config_reference_is_current(registry):
    expected = docs.render(registry)
    actual = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/config.md is stale: run `python -m toolkit.config.docs`"


def test_every_field_has_a_description(registry):
    missing = [f"{model.__name__}.{name}" for model in all_models(registry)
               for name, info in model.model_fields.items() if not (info.description or "").strip()]
    assert not missing, f"fields without a docstring: {missing}"


def test_every_block_forbids_unknown_keys(registry):
    lax = [model.__name__ for model in all_models(registry) if model.model_config.get("extra") != "forbid"]
    assert not lax
