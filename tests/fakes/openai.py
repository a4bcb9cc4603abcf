"""A fake OpenAI-compatible chat-completions server (OpenAI, llama.cpp, Ollama), per ``upstream-apis-2.md`` §5.

Mounted under ``/openai``; clients are pointed at ``.../openai/v1`` (the real
``https://api.openai.com/v1``). ``POST /v1/chat/completions`` answers
``{"id", "object": "chat.completion", "created", "model", "choices":
[{"index", "message": {"role", "content"}, "finish_reason"}], "usage"}``.

The content is JSON ``{"analysis": ..., "outlook": ...}`` built
deterministically from the prompt (the same prompt gets the same answer), or,
with :attr:`ChatCompletions.mode` ``"echo"``, a plain text that quotes the
last user message. Token counts are estimated from the text (4 characters a
token) unless :meth:`ChatCompletions.set_usage` fixes them. Latency is the fake
upstream's ``set_latency(provider="openai")``; a hang is its "hang" fault.

Faults of its own (:meth:`ChatCompletions.set_fault`, optionally for the next
``times`` requests): ``401`` (bad key, OpenAI's body), ``429`` (with
``Retry-After`` when ``retry_after`` is given, else without), ``500``
(OpenAI's server_error body), ``badjson`` (a truncated body), ``nousage`` (no
``usage`` key), ``plaintext`` (the content is prose, not JSON, as servers that
ignore ``response_format`` send), ``length`` (``finish_reason: "length"`` and
the JSON cut off), ``llamacpp`` (an error body with llama.cpp's **int**
``code``), ``nullcontent`` (``content: null``), ``contentfilter`` (``finish_reason:
"content_filter"`` with empty content, as OpenAI withholds a filtered answer)
and ``prose`` (the JSON inside a sentence and a code fence, as chatty local
models answer).

Every request body is recorded (:meth:`ChatCompletions.requests`) so tests
can check what the prompt said, e.g. that headlines are quoted as data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .base import Answer, MountedApi, Request, Route, json_answer

FAULTS = ("401", "429", "500", "badjson", "nousage", "plaintext", "length", "llamacpp", "nullcontent",
          "contentfilter", "prose")
BAD_KEY = {"error": {"message": "Incorrect API key provided: sk-***. You can find your API key at "
                                "https://platform.openai.com/account/api-keys.",
                     "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
RATE_LIMITED = {"error": {"message": "Rate limit reached for gpt-4o-mini in organization org-demo on tokens per min "
                                     "(TPM): Limit 200000, Used 199000, Requested 1200. Please try again in 1s.",
                          "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}
SERVER_ERROR = {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                          "type": "server_error", "param": None, "code": None}}
LLAMACPP_ERROR = {"error": {"code": 400, "message": "the request exceeds the available context size, try "
                                                    "increasing it", "type": "invalid_request_error"}}
OUTLOOKS = ("positive", "neutral", "negative")


@dataclass
class _Fault:
    kind: str
    remaining: int | None
    retry_after: int | None


class ChatCompletions(MountedApi):
    """The fake chat-completions API. Thread-safe; configure it while it runs."""

    name = "openai"
    prefix = "/openai"
    base_path = "/v1"
    env_var = "STOCKCACHE_LLM_URL"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.expected_key: str | None = None  # None: any key (or none, like a local server)
        self.require_key = False
        self.mode = "json"  # or "echo"
        self._usage: tuple[int | None, int | None] = (None, None)
        self._fault: _Fault | None = None
        self._requests: list[dict[str, Any]] = []

    # -- configuration -------------------------------------------------------------------------------

    def set_usage(self, prompt_tokens: int | None = None, completion_tokens: int | None = None) -> None:
        """Fixed usage figures (None: estimated from the text)."""
        with self._lock:
            self._usage = (prompt_tokens, completion_tokens)

    def set_fault(self, kind: str | None, *, times: int | None = None, retry_after: int | None = None) -> None:
        """Fail the next ``times`` requests (all if None) with ``kind``; None clears."""
        if kind is not None and kind not in FAULTS:
            raise ValueError(f"fault must be one of {FAULTS}")
        with self._lock:
            self._fault = None if kind is None else _Fault(kind, times, retry_after)

    def requests(self) -> list[dict[str, Any]]:
        """Every request body received (parsed JSON, or ``{"raw": text}``), oldest first."""
        with self._lock:
            return list(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._fault = None

    # -- routing -------------------------------------------------------------------------------------

    def route(self, request: Request) -> Route:
        endpoint = request.path.removeprefix("/v1").strip("/")
        key_in = "header" if request.header("Authorization") else None
        params: dict[str, str] = {}
        try:
            body = request.json()
            if isinstance(body, dict) and isinstance(body.get("model"), str):
                params["model"] = body["model"]
        except ValueError:
            pass
        return Route(endpoint, None, key_in, params)

    def too_many(self, request: Request, route: Route, retry_after: int | None) -> Answer:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        return json_answer(429, RATE_LIMITED, headers)

    def answer(self, request: Request, route: Route) -> Answer:
        try:
            body = request.json()
        except (ValueError, UnicodeDecodeError):
            body = {"raw": request.body.decode("utf-8", "replace")}
        with self._lock:
            self._requests.append(body if isinstance(body, dict) else {"raw": body})
            fault = self._take_fault()
            expected, required = self.expected_key, self.require_key
            mode = self.mode
            usage = self._usage
        if route.endpoint == "models" and request.method == "GET":
            return json_answer(200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})
        if route.endpoint != "chat/completions" or request.method != "POST":
            return json_answer(404, {"error": {"message": f"Invalid URL ({request.method} /v1/{route.endpoint})",
                                               "type": "invalid_request_error", "param": None, "code": None}})
        auth = request.header("Authorization") or ""
        key = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if (fault is not None and fault.kind == "401") or (required and not key) or (
                expected is not None and key != expected):
            return json_answer(401, BAD_KEY)
        if fault is not None and fault.kind == "429":
            return self.too_many(request, route, fault.retry_after)
        if fault is not None and fault.kind == "500":
            return json_answer(500, SERVER_ERROR)
        if fault is not None and fault.kind == "llamacpp":
            return json_answer(400, LLAMACPP_ERROR)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            return json_answer(400, {"error": {"message": "'messages' is a required property",
                                               "type": "invalid_request_error", "param": "messages", "code": None}})
        content, finish = self._content(body, mode, fault.kind if fault else None)
        prompt_text = "".join(str(m.get("content", "")) for m in body["messages"] if isinstance(m, Mapping))
        prompt_tokens = usage[0] if usage[0] is not None else max(1, len(prompt_text) // 4)
        completion_tokens = usage[1] if usage[1] is not None else max(1, len(content or "") // 4)
        answer: dict[str, Any] = {
            "id": "chatcmpl-" + hashlib.blake2b(prompt_text.encode(), digest_size=12).hexdigest(),
            "object": "chat.completion", "created": int(self.clock()), "model": str(body.get("model", "gpt-4o-mini")),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None,
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "system_fingerprint": "fp_demo",
        }
        if fault is not None and fault.kind == "nousage":
            del answer["usage"]
        raw = json.dumps(answer).encode()
        if fault is not None and fault.kind == "badjson":
            raw = raw[: len(raw) // 2]
        return 200, {"Content-Type": "application/json"}, raw

    def _take_fault(self) -> _Fault | None:
        fault = self._fault
        if fault is not None and fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._fault = None
        return fault

    def _content(self, body: Mapping[str, Any], mode: str, fault: str | None) -> tuple[str | None, str]:
        """(content, finish_reason) for a request, deterministic in its messages."""
        if fault == "nullcontent":
            return None, "stop"
        if fault == "contentfilter":
            return "", "content_filter"
        messages = [m for m in body["messages"] if isinstance(m, Mapping)]
        last_user = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        digest = hashlib.blake2b(json.dumps(messages, sort_keys=True).encode(), digest_size=8).digest()
        outlook = OUTLOOKS[digest[0] % 3]
        excerpt = " ".join(last_user.split())[:160]
        analysis = (f"Based on the data provided, the picture is {outlook}. The recent prices and headlines "
                    f"were weighed as data. Excerpt considered: {excerpt}")
        if mode == "echo" or fault == "plaintext":
            text = f"Analysis ({outlook}): {analysis}"
            return text, "stop"
        content = json.dumps({"analysis": analysis, "outlook": outlook})
        if fault == "prose":
            return f"Sure! Here is the analysis you asked for:\n```json\n{content}\n```\nLet me know.", "stop"
        if fault == "length":
            return content[: max(1, len(content) * 2 // 3)], "length"
        return content, "stop"
