"""Any OpenAI-compatible chat-completions API (OpenAI, llama.cpp's server, Ollama): the ``analysis`` kind.

One model call is ``POST {STOCKCACHE_LLM_URL}/chat/completions`` with
``model``, ``messages`` (from :func:`stockcache.analysis.messages`),
``temperature``, ``max_tokens`` and ``response_format: {"type":
"json_object"}``; servers that ignore the format answer prose, which is read
as the text. Its budget is in tokens (``unit = "token"``): a call reserves
the prompt's estimated size plus ``max_tokens`` against
``STOCKCACHE_LLM_TOKENS_PER_DAY`` before it is made and settles to the
``usage`` the answer reports (:meth:`LlmProvider.spent`); an answer without
``usage`` keeps the whole reservation, so the budget never counts less than
was spent.

It runs with a key (``STOCKCACHE_LLM_API_KEY`` or ``OPENAI_API_KEY``) or with
a URL other than OpenAI's (a local server, used with or without a key).
Without either, the demo source writes the analyses. The key travels only in
the ``Authorization`` header; no message of ours quotes the API's error text
for a refused key (OpenAI's names part of the key).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

from ...analysis import ReplyError, based_on, estimate_tokens, messages, read_reply
from ...errors import RateLimited, UpstreamAuthError, UpstreamError
from ...settings import Section, Settings, non_negative_float, non_negative_int, positive_int, setting, url
from ...symbols import Listing
from ..guard import Limits
from .base import Clock, Provider, UpstreamRequest, json_object, retry_after_seconds

DEFAULT_URL = "https://api.openai.com/v1"
TEMPERATURE = 0.2
_MODEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}")


def model_name(text: str) -> str:
    """A model name as the APIs spell them (``gpt-4o-mini``, ``llama3.1:8b``, ``org/model-GGUF``)."""
    text = text.strip()
    if not _MODEL_RE.fullmatch(text):
        raise ValueError("must be 1 to 100 letters, digits or . _ : / @ + -, starting with a letter or digit")
    return text


@dataclass(frozen=True)
class LlmConfig(Section):
    """The model API's settings: ``STOCKCACHE_LLM_*`` (and ``OPENAI_API_KEY``)."""

    prefix = "llm"
    url: str = setting(DEFAULT_URL, env="STOCKCACHE_LLM_URL", parse=url,
                       help="Base of an OpenAI-compatible API (`http://localhost:11434/v1` for Ollama, "
                            "`http://localhost:8080/v1` for llama.cpp); another URL than OpenAI's needs no key.")
    api_key: str = setting("", env=("STOCKCACHE_LLM_API_KEY", "OPENAI_API_KEY"), secret=True,
                           help="Key of the model API; with neither a key nor another URL, analyses come from "
                                "the offline demo source.")
    model: str = setting("gpt-4o-mini", env="STOCKCACHE_LLM_MODEL", parse=model_name,
                         help="Model asked for analyses (its name on the model API).")
    max_tokens: int = setting(400, env="STOCKCACHE_LLM_MAX_TOKENS", parse=positive_int,
                              help="Completion tokens one analysis may use (the call's max_tokens).")
    tokens_per_day: int = setting(200000, env="STOCKCACHE_LLM_TOKENS_PER_DAY", parse=non_negative_int,
                                  help="Model tokens (prompt and completion) allowed per UTC day, reserved before "
                                       "each call; 0 means no limit.")
    cost_per_1k_tokens: float = setting(0.0006, env="STOCKCACHE_LLM_COST_PER_1K_TOKENS", parse=non_negative_float,
                                        help="Price of 1000 model tokens, for the estimated cost in KPIs.")


def configured(section: LlmConfig) -> bool:
    """Whether a model API is configured: a key, or a URL of its own (a local server)."""
    return bool(section.api_key) or section.url.rstrip("/") != DEFAULT_URL


class LlmProvider(Provider):
    """The chat-completions adapter. Stateless after construction, so thread-safe."""

    name = "llm"
    label = "the model API"
    config = LlmConfig
    kinds = frozenset({"analysis"})
    priority = {"analysis": 10}
    keyed = False  # a model key never turns market data on
    unit = "token"

    def __init__(self, config: LlmConfig, *, clock: Clock = time.time) -> None:
        super().__init__(config, clock=clock)
        self.config_section = config
        self._base_url = config.url.rstrip("/")
        self._host = urlsplit(self._base_url).netloc or self._base_url

    @classmethod
    def enabled(cls, settings: Settings, *, real: bool) -> bool:
        return configured(settings.section(LlmConfig))

    @classmethod
    def has_key(cls, settings: Settings) -> bool:
        return configured(settings.section(LlmConfig))

    @property
    def model(self) -> str:
        return self.config_section.model

    def limits(self) -> Limits:
        """Tokens per UTC day; no per-second or per-minute limit of ours (the API's 429 pauses it)."""
        return Limits(per_day=self.config_section.tokens_per_day)

    @classmethod
    def unit_cost(cls, section: Section) -> float:
        """Price of one budget unit, a token (the setting is per 1000)."""
        return float(getattr(section, "cost_per_1k_tokens", 0.0)) / 1000.0

    def variant(self, kind: str) -> str:
        """``llm-<model>``: analyses of another model are other cache entries."""
        return f"{self.name}-{re.sub(r'[^A-Za-z0-9._-]', '_', self.model)}"

    def covers(self, kind: str, listing: Listing | None) -> bool:
        return kind == "analysis"

    # -- requests and answers ---------------------------------------------------------

    def build_request(self, kind: str, symbol: str, params: Mapping[str, Any]) -> UpstreamRequest:
        """The chat-completions call for ``symbol``'s analysis from ``params["context"]``.

        ``units`` is the reservation: the prompt's estimated tokens plus the completion cap.
        """
        self._check_kind(kind)
        chat = messages(symbol, params.get("context") or {})
        section = self.config_section
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        body = {"model": section.model, "messages": chat, "temperature": TEMPERATURE,
                "max_tokens": section.max_tokens, "response_format": {"type": "json_object"}}
        return UpstreamRequest(url=f"{self._base_url}/chat/completions", params={}, headers=headers,
                               method="POST", json=body, units=estimate_tokens(chat) + section.max_tokens)

    def spent(self, kind: str, request: UpstreamRequest, status: int, body: bytes) -> int | None:
        """Tokens the call really used: ``usage`` of a 200 answer, 0 for an error answer, None (keep the
        reservation) for a 200 without readable ``usage``."""
        if not 200 <= status < 300:
            return 0
        usage = _usage(body)
        return None if usage is None else usage[0] + usage[1]

    def parse(self, kind: str, symbol: str, params: Mapping[str, Any], status: int,
              headers: Mapping[str, str], body: bytes) -> Any:
        self._check_kind(kind)
        if status in (401, 403):
            what = "refused the key" if status == 401 else "refused this key the model"
            self._fail(UpstreamAuthError,
                       f"The model API at {self._host} {what} (HTTP {status}): check STOCKCACHE_LLM_API_KEY "
                       f"(or OPENAI_API_KEY) and STOCKCACHE_LLM_MODEL.")
        if status == 429:
            self._fail(RateLimited, f"The model API at {self._host} is rate limiting stockcache (HTTP 429).",
                       retry_after=retry_after_seconds(headers, self._clock()))
        if not 200 <= status < 300:
            self._http_error(status, body)
        data = self._json(body)
        try:
            choice = data["choices"][0]
            content = choice["message"]["content"]
            finish = choice.get("finish_reason")
        except (TypeError, KeyError, IndexError, AttributeError):
            self._fail(UpstreamError, "The model API sent a chat completion without choices[0].message.content.")
        try:
            text, outlook = read_reply(content, finish)
        except ReplyError as exc:
            self._fail(UpstreamError, f"The model API's answer is unusable: {exc}.")
        usage = _usage(body)
        if usage is None:  # counted as reserved (see spent): say so in the tokens too
            chat = messages(symbol, params.get("context") or {})
            usage = (estimate_tokens(chat), self.config_section.max_tokens)
        model = data.get("model") if isinstance(data, dict) else None
        return {
            "symbol": symbol,
            "analysis": text,
            "outlook": outlook,
            "model": model.strip()[:100] if isinstance(model, str) and model.strip() else self.model,
            "based_on": based_on(params.get("context") or {}),
            "tokens": {"prompt": usage[0], "completion": usage[1]},
        }

    def _http_error(self, status: int, body: bytes) -> NoReturn:
        message = None
        try:
            error = json_object(body).get("error")
            message = error.get("message") if isinstance(error, dict) else error
        except ValueError:
            pass
        shown = (f": {' '.join(message.split())[:160].rstrip('.')}"
                 if isinstance(message, str) and message.strip() else "")
        hint = " (check STOCKCACHE_LLM_URL and STOCKCACHE_LLM_MODEL)" if status == 404 else ""
        self._fail(UpstreamError, f"The model API at {self._host} answered HTTP {status}{shown}{hint}.")


def _usage(body: bytes) -> tuple[int, int] | None:
    """``(prompt_tokens, completion_tokens)`` from an answer, or None when it does not say."""
    try:
        usage = json_object(body).get("usage")
    except ValueError:
        return None
    if not isinstance(usage, dict):
        return None
    out = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not (
                0 <= value <= 10**8):
            return None
        out.append(int(value))
    return out[0], out[1]
