"""Models: one small async interface, providers behind it, chosen by ``provider:model``.

``CHARTER_MODEL=openai:gpt-4o-mini`` (or ``--model``) picks a model. Keys come
from each provider's usual environment variable.

| provider | key | base URL |
|---|---|---|
| ``openai`` | ``OPENAI_API_KEY`` | ``OPENAI_BASE_URL`` or OpenAI's |
| ``anthropic`` | ``ANTHROPIC_API_KEY`` | ``ANTHROPIC_BASE_URL`` or Anthropic's |
| ``openrouter`` | ``OPENROUTER_API_KEY`` | OpenRouter's |
| ``ollama`` | none | ``OLLAMA_BASE_URL`` or ``http://localhost:11434/v1`` |
| ``compat`` | ``CHARTER_API_KEY`` (optional) | ``CHARTER_BASE_URL`` (any OpenAI-compatible server: vLLM, llama.cpp) |

A spec may end with options: ``compat:qwen2.5?response_format=json_object``
fixes the structured-output form an OpenAI-compatible server is sent (``auto``,
the default, negotiates it).

``scripted:FILE`` answers from a YAML or JSON file, offline (see :func:`~charter.models.scripted.load_script`).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Mapping
from urllib.parse import parse_qsl

from ..errors import ConfigError
from .base import Message, Model, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from .prices import cost, set_price
from .retrying import Retrying, RetryingModel
from .scripted import ScriptedModel, load_script

__all__ = [
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "Retrying",
    "RetryingModel",
    "ScriptedModel",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "check_spec",
    "cost",
    "model_from_spec",
    "set_price",
    "standing_in",
]

# While set (a replay), every model a spec names is this function's, and no provider is built or called.
_stand_in: contextvars.ContextVar[Callable[[str | None], Model] | None] = contextvars.ContextVar(
    "charter_model_stand_in", default=None)


@contextlib.contextmanager
def standing_in(make: Callable[[str | None], Model]) -> Iterator[None]:
    """Within this context (and the tasks started in it), :func:`model_from_spec` returns
    ``make(spec)`` and :func:`check_spec` finds nothing wrong: a replay answers every model
    call from the log, whatever the steps name or ``$CHARTER_MODEL`` says."""
    token = _stand_in.set(make)
    try:
        yield
    finally:
        _stand_in.reset(token)

_OPENAI_LIKE = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", None),
    "openrouter": ("OPENROUTER_API_KEY", None, "https://openrouter.ai/api/v1"),
    "ollama": (None, "OLLAMA_BASE_URL", "http://localhost:11434/v1"),
    "compat": ("CHARTER_API_KEY", "CHARTER_BASE_URL", None),
}


def model_from_spec(spec: str | None = None, env: Mapping[str, str] | None = None) -> Model:
    """The model named ``provider:model`` (default: ``$CHARTER_MODEL``)."""
    env = os.environ if env is None else env
    make = _stand_in.get()
    if make is not None:
        return make(spec or env.get("CHARTER_MODEL"))
    provider, name, options = _parse(spec or env.get("CHARTER_MODEL"))
    if provider == "scripted":  # answers from a file, offline: scripted:answers.yaml
        return ScriptedModel.from_file(name)
    timeout = _timeout(env)
    if provider == "anthropic":
        from ._anthropic import AnthropicModel

        return AnthropicModel(name, api_key=_key(env, "ANTHROPIC_API_KEY", provider),
                              base_url=env.get("ANTHROPIC_BASE_URL"), timeout=timeout)
    if provider in _OPENAI_LIKE:
        from ._openai import OpenAIModel

        api_key, base_url = _openai_like(provider, env)
        return OpenAIModel(name, api_key=api_key, base_url=base_url, provider=provider, timeout=timeout,
                           response_format=options.get("response_format", "auto"))
    raise AssertionError(provider)  # _parse refuses every other provider


def check_spec(spec: str | None = None, env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` if :func:`model_from_spec` would, without building the model
    (nor importing its SDK): for checking a plan before anything runs."""
    if _stand_in.get() is not None:
        return
    env = os.environ if env is None else env
    provider, name, _ = _parse(spec or env.get("CHARTER_MODEL"))
    if provider == "scripted":
        load_script(name)  # a missing or bad file is said before anything runs
        return
    _timeout(env)
    if provider == "anthropic":
        _key(env, "ANTHROPIC_API_KEY", provider)
    else:
        _openai_like(provider, env)


def _parse(spec: str | None) -> tuple[str, str, dict[str, str]]:
    """``provider:model?option=value`` as its parts, checked."""
    if not spec:
        raise ConfigError("no model chosen: set CHARTER_MODEL=provider:model or pass --model "
                          "(for example openai:gpt-4o-mini or anthropic:claude-sonnet-4-0)")
    head, _, query = spec.partition("?")
    provider, sep, name = head.partition(":")
    if not sep or not name:
        raise ConfigError(f"model {spec!r} is not provider:model (for example openai:gpt-4o-mini)")
    if provider == "scripted":
        if query:
            raise ConfigError(f"model {spec!r}: a scripted model takes no options")
        return provider, name, {}
    if provider != "anthropic" and provider not in _OPENAI_LIKE:
        known = ", ".join(["anthropic", *_OPENAI_LIKE, "scripted"])
        raise ConfigError(f"unknown model provider {provider!r} (known: {known})")
    try:
        options = dict(parse_qsl(query, strict_parsing=True)) if query else {}
    except ValueError:
        raise ConfigError(f"model {spec!r}: options are ?name=value&name=value") from None
    for key, value in options.items():
        if key != "response_format":
            raise ConfigError(f"model {spec!r}: unknown option {key!r} (known: response_format)")
        if provider == "anthropic":
            raise ConfigError(f"model {spec!r}: response_format is for OpenAI-compatible servers; "
                              "Anthropic models answer a schema through a tool call")
        from ._openai import RESPONSE_FORMATS

        if value not in RESPONSE_FORMATS:
            raise ConfigError(f"model {spec!r}: response_format must be one of {', '.join(RESPONSE_FORMATS)}")
    return provider, name, options


def _openai_like(provider: str, env: Mapping[str, str]) -> tuple[str, str | None]:
    """The API key and base URL of an OpenAI-compatible provider."""
    key_var, url_var, default_url = _OPENAI_LIKE[provider]
    base_url = (env.get(url_var) if url_var else None) or default_url
    if provider == "compat" and not base_url:
        raise ConfigError("compat:MODEL needs CHARTER_BASE_URL, the server's OpenAI-compatible /v1 URL")
    if key_var is None:
        return "none", base_url
    if provider == "compat":
        return env.get(key_var) or "none", base_url
    return _key(env, key_var, provider), base_url


def _timeout(env: Mapping[str, str]) -> float:
    raw = env.get("CHARTER_MODEL_TIMEOUT", "120")
    try:
        timeout = float(raw)
    except ValueError:
        timeout = 0.0
    if not timeout > 0:
        raise ConfigError(f"CHARTER_MODEL_TIMEOUT={raw!r}: give the seconds a model call may take, like 120")
    return timeout


def _key(env: Mapping[str, str], var: str, provider: str) -> str:
    value = env.get(var)
    if not value:
        raise ConfigError(f"{var} is not set: the {provider} provider needs an API key")
    return value
