"""A real HTTP server on loopback that answers like a model provider, from a script.

Tests give it answers (status, headers, JSON or raw bytes, an optional delay) and
read back the requests it received. It speaks whatever the script says, so one
server plays OpenAI's Chat Completions or Anthropic's Messages API.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # dict/list: JSON; bytes/str: sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class ProviderServer:
    """Answers from the queue given to :meth:`reply`, else from ``responder(body)`` if set."""

    def __init__(self, responder: Callable[[Any], Reply] | None = None) -> None:
        self.replies: list[Reply] = []
        self.received: list[Received] = []
        self.responder = responder
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw
                with server._lock:
                    server.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                    if server.replies:
                        reply = server.replies.pop(0)
                    elif server.responder is not None:
                        reply = server.responder(body)
                    else:
                        reply = Reply(500, {"error": {"message": "no reply scripted"}})
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body
                data = payload if isinstance(payload, bytes) else (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def reply(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)


@contextmanager
def provider_server(responder: Callable[[Any], Reply] | None = None) -> Iterator[ProviderServer]:
    server = ProviderServer(responder)
    thread = threading.Thread(target=server.httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        thread.join(5)


def openai_reply(content: str | None = "", *, tool_calls: list[dict[str, Any]] | None = None,
                 prompt_tokens: int = 11, completion_tokens: int = 7, finish_reason: str = "stop") -> Reply:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{i}", "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for i, c in enumerate(tool_calls)
        ]
    return Reply(200, {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    })


def anthropic_reply(content: list[dict[str, Any]], *, input_tokens: int = 13, output_tokens: int = 5,
                    stop_reason: str = "end_turn") -> Reply:
    return Reply(200, {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": content,
        "stop_reason": stop_reason, "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    })


def refusing_forms(accepts: set[str], answer: Callable[[Any], Reply], *, status: int = 400,
                   message: str = "response_format type {form!r} is not supported",
                   kind: str = "invalid_request_error") -> Callable[[Any], Reply]:
    """A responder for an OpenAI-compatible server that accepts only some structured-output forms
    (``json_schema``, ``json_object``, ``text``: no ``response_format``), and refuses the others
    with ``status`` and ``message``, the way llama.cpp, Ollama or vLLM refuse what they lack.
    Accepted requests get ``answer(body)``."""

    def respond(body: Any) -> Reply:
        form = (body.get("response_format") or {}).get("type", "text") if isinstance(body, dict) else "text"
        if form not in accepts:
            return Reply(status, {"error": {"message": message.format(form=form), "type": kind}})
        return answer(body)

    return respond


# What llama-cpp-python's server answers to a response_format it does not know: its request model
# fails to validate, and its error handler turns that into a 500 "internal_server_error".
LLAMA_CPP_PYTHON_REFUSAL = (
    "1 validation error:\n  {{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
    "'msg': \"Input should be 'text' or 'json_object'\", 'input': {form!r}}}"
)
