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

``scripted:FILE`` answers from a YAML or JSON file, offline (see :func:`~charter.models.scripted.load_script`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ..errors import ConfigError
from .base import Message, Model, ModelRequest, ModelResponse, ToolCall, ToolSpec, Usage
from .prices import cost, set_price
from .retrying import RetryingModel
from .scripted import ScriptedModel

__all__ = [
    "Message",
    "Model",
    "ModelRequest",
    "ModelResponse",
    "RetryingModel",
    "ScriptedModel",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "cost",
    "model_from_spec",
    "set_price",
]

_OPENAI_LIKE = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL", None),
    "openrouter": ("OPENROUTER_API_KEY", None, "https://openrouter.ai/api/v1"),
    "ollama": (None, "OLLAMA_BASE_URL", "http://localhost:11434/v1"),
    "compat": ("CHARTER_API_KEY", "CHARTER_BASE_URL", None),
}


def model_from_spec(spec: str | None = None, env: Mapping[str, str] | None = None) -> Model:
    """The model named ``provider:model`` (default: ``$CHARTER_MODEL``)."""
    env = os.environ if env is None else env
    spec = spec or env.get("CHARTER_MODEL")
    if not spec:
        raise ConfigError("no model chosen: set CHARTER_MODEL=provider:model or pass --model "
                          "(for example openai:gpt-4o-mini or anthropic:claude-sonnet-4-0)")
    provider, sep, name = spec.partition(":")
    if not sep or not name:
        raise ConfigError(f"model {spec!r} is not provider:model (for example openai:gpt-4o-mini)")
    timeout = float(env.get("CHARTER_MODEL_TIMEOUT", "120"))
    if provider == "anthropic":
        from ._anthropic import AnthropicModel

        return AnthropicModel(name, api_key=_key(env, "ANTHROPIC_API_KEY", provider),
                              base_url=env.get("ANTHROPIC_BASE_URL"), timeout=timeout)
    if provider in _OPENAI_LIKE:
        from ._openai import OpenAIModel

        key_var, url_var, default_url = _OPENAI_LIKE[provider]
        base_url = (env.get(url_var) if url_var else None) or default_url
        if provider == "compat" and not base_url:
            raise ConfigError("compat:MODEL needs CHARTER_BASE_URL, the server's OpenAI-compatible /v1 URL")
        if key_var is None:
            api_key = "none"
        elif provider == "compat":
            api_key = env.get(key_var) or "none"
        else:
            api_key = _key(env, key_var, provider)
        return OpenAIModel(name, api_key=api_key, base_url=base_url, provider=provider, timeout=timeout)
    if provider == "scripted":  # answers from a file, offline: scripted:answers.yaml
        return ScriptedModel.from_file(name)
    known = ", ".join(["anthropic", *_OPENAI_LIKE, "scripted"])
    raise ConfigError(f"unknown model provider {provider!r} (known: {known})")


def _key(env: Mapping[str, str], var: str, provider: str) -> str:
    value = env.get(var)
    if not value:
        raise ConfigError(f"{var} is not set: the {provider} provider needs an API key")
    return value
