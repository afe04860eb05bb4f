"""A scripted model's answers from a file (``scripted:FILE``), as ScriptedModel takes them in code."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter import ConfigError, PermanentError, RetryableError
from charter.models import Message, ModelRequest, ScriptedModel, model_from_spec
from charter.models.scripted import load_script

ASK = ModelRequest(messages=(Message("user", "hi"),))


async def test_every_kind_of_answer(tmp_path: Path) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text("""\
- plain text
- text: more text
- json: {a: [1, 2]}
- json: 5
- call: lookup
  args: {city: Lisbon}
- error: overloaded
  retry_after: 0.5
- error: bad request
  retryable: false
""", encoding="utf-8")
    model = model_from_spec(f"scripted:{path}", env={})
    assert isinstance(model, ScriptedModel) and model.name == f"scripted:{path}"
    assert (await model.complete(ASK)).text == "plain text"
    assert (await model.complete(ASK)).text == "more text"
    assert (await model.complete(ASK)).text == '{"a": [1, 2]}'
    assert (await model.complete(ASK)).text == "5"
    call = (await model.complete(ASK)).tool_calls[0]
    assert (call.name, call.arguments) == ("lookup", {"city": "Lisbon"})
    with pytest.raises(RetryableError, match="overloaded") as retryable:
        await model.complete(ASK)
    assert retryable.value.next_retry_delay == 0.5
    with pytest.raises(PermanentError, match="bad request"):
        await model.complete(ASK)
    with pytest.raises(PermanentError, match=rf"no answer left for request 8 \(it had 7\); add answers to {path}"):
        await model.complete(ASK)


@pytest.mark.parametrize(("text", "message"), [
    ("- {text: 1}\n", "answer 1: 'text' must be a string"),
    ("- {error: x, retryable: maybe}\n", "answer 1: 'retryable' is true or false"),
    ("- {error: x, retry_after: -1}\n", "answer 1: 'retry_after' is a number of seconds"),
    ("- ok\n- {json: 1, args: {}}\n", "answer 2: args cannot go with 'json'"),
    ("- [1, 2]\n", "answer 1: an answer is a string or a mapping"),
    ("[]\n", "must hold a non-empty list of answers"),
])
def test_bad_entries_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "answers.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=f"scripted model file {path}.*{message}".replace("[", r"\[")):
        load_script(path)


def test_the_example_in_the_docs_loads(tmp_path: Path) -> None:
    import re

    docs = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text(encoding="utf-8")
    [example] = re.findall(r"```yaml\n(# answers\.yaml.*?)```", docs, re.S)
    path = tmp_path / "answers.yaml"
    path.write_text(example, encoding="utf-8")
    assert len(load_script(path)) == 4
