"""The malformed-config corpus: every file's error names the path, the line and a suggestion.

Each file in malformed/ states what its message must contain in ``# expect:`` lines, and marks the
offending lines with ``# <- error``; the message must give each marked line's number.
"""

from pathlib import Path

import pytest

from toolkit.config.job import load_job_config
from toolkit.errors import ConfigError

CORPUS = sorted((Path(__file__).parent / "malformed").glob("*.*"))
WHOLE_FILE = ("YAML syntax error", "the file must be a block of keys")
"""Problems that belong to the file as a whole, not to one key: they name a line but no YAML path."""
JSON_EXPECT = {"json_config.json": ["train.lr: must be > 0, got -1", "line 1,"]}


def expectations(path: Path) -> tuple[list[str], list[int]]:
    lines = path.read_text().splitlines()
    fragments = [line.split("# expect:", 1)[1].strip() for line in lines if line.startswith("# expect:")]
    marked = [number for number, line in enumerate(lines, 1) if line.rstrip().endswith("# <- error")]
    return fragments + JSON_EXPECT.get(path.name, []), marked


def test_corpus_is_large():
    assert len(CORPUS) >= 30


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_malformed_config_message(path: Path, registry, monkeypatch):
    monkeypatch.delenv("EASEL_TEST_UNSET_VARIABLE", raising=False)
    fragments, marked = expectations(path)
    assert fragments, f"{path.name} states no expectation"
    with pytest.raises(ConfigError) as caught:
        load_job_config(path, registry)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    for line in marked:
        assert f"line {line}," in message, f"line {line} not named in:\n{message}"
        at_line = [issue for issue in caught.value.issues if issue.line == line]
        whole_file = any(issue.message.startswith(WHOLE_FILE) for issue in at_line)
        assert whole_file or all(issue.path for issue in at_line), f"no YAML path for line {line} in:\n{message}"
    assert message.endswith(caught.value.hint) and caught.value.hint.strip(), "the message must end with what to do"
    assert "Traceback" not in message


def test_python_tag_is_never_executed(registry, tmp_path):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f'job: !!python/object/apply:os.system ["touch {marker}"]\nconfig: {{name: x, process: []}}\n')
    with pytest.raises(ConfigError, match="is not allowed"):
        load_job_config(config, registry)
    assert not marker.exists()
