"""The calls the app makes to a vLLM OpenAI server: chat completions (whole or streamed), adapter
loading and unloading, the served names, and prompt log-probabilities.

A version is served under its own name (``v0003``), the base under ``base``; a request picks
what answers by its ``model`` field. Every error carries what the server said.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Iterator

import httpx

from ..core.chat import Message
from ..core.errors import UserError
from ..feedback.records import Sampling

log = logging.getLogger(__name__)


class VllmError(UserError):
    """The vLLM server refused a call or could not be reached."""


@dataclass(frozen=True)
class Completion:
    """A chat completion's candidates and token counts."""

    texts: list[str]
    prompt_tokens: int
    new_tokens: int


class VllmClient:
    """HTTP calls to one vLLM OpenAI server.

    Args:
        url: its base URL, e.g. ``http://127.0.0.1:8000``.
        timeout_s: how long one call may take (a whole answer, or the gap between streamed chunks).
    """

    def __init__(self, url: str, timeout_s: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _post(self, path: str, body: dict) -> httpx.Response:
        try:
            response = self._http.post(path, json=body)
        except httpx.TransportError as exc:
            raise VllmError(f"vLLM at {self.url} could not be reached ({type(exc).__name__}: {exc})") from exc
        if response.status_code != 200:
            raise VllmError(f"vLLM refused {path} ({response.status_code}): {_detail(response)}")
        return response

    def served(self) -> list[str]:
        """The names the server answers under now: ``base`` and every loaded adapter."""
        try:
            response = self._http.get("/v1/models", timeout=10)
        except httpx.TransportError as exc:
            raise VllmError(f"vLLM at {self.url} could not be reached ({type(exc).__name__}: {exc})") from exc
        if response.status_code != 200:
            raise VllmError(f"vLLM refused /v1/models ({response.status_code}): {_detail(response)}")
        return [m["id"] for m in response.json()["data"]]

    def load(self, name: str, path: str) -> None:
        """Load the LoRA adapter in folder ``path`` (as the server sees it) under ``name``.

        In place: whatever the server holds under ``name`` (from an earlier run of the app against
        the same server) is replaced, so the name always answers with this folder's weights.
        """
        self._post("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path, "load_inplace": True})

    def unload(self, name: str) -> None:
        """Unload the adapter served under ``name``."""
        self._post("/v1/unload_lora_adapter", {"lora_name": name})

    @staticmethod
    def _chat_body(model: str, messages: list[Message], n: int, sampling: Sampling) -> dict:
        body: dict = {"model": model, "messages": messages, "n": n, "max_tokens": sampling.max_new_tokens}
        if sampling.do_sample:
            body |= {"temperature": sampling.temperature, "top_p": sampling.top_p}
        else:
            body |= {"temperature": 0.0}
        return body

    def chat(self, model: str, messages: list[Message], n: int, sampling: Sampling) -> Completion:
        """``n`` candidates for the chat ``messages`` from ``model``, sampled in one request."""
        data = self._post("/v1/chat/completions", self._chat_body(model, messages, n, sampling)).json()
        choices = sorted(data["choices"], key=lambda c: c["index"])
        usage = data.get("usage") or {}
        return Completion(
            [c["message"]["content"] or "" for c in choices], int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )  # fmt: skip

    def stream_chat(self, model: str, messages: list[Message], n: int, sampling: Sampling) -> Iterator[list[str] | Completion]:
        """Stream ``n`` candidates: each chunk yields every candidate's text so far, then the ``Completion``.

        Closing the iterator early closes the connection, which aborts the request in vLLM.
        """
        body = self._chat_body(model, messages, n, sampling) | {"stream": True, "stream_options": {"include_usage": True}}
        texts = [""] * n
        usage: dict = {}
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise VllmError(f"vLLM refused /v1/chat/completions ({response.status_code}): {_detail(response)}")
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[len("data: ") :])
                    usage = chunk.get("usage") or usage
                    changed = False
                    for choice in chunk.get("choices", []):
                        delta = (choice.get("delta") or {}).get("content")
                        if delta:
                            texts[choice["index"]] += delta
                            changed = True
                    if changed:
                        yield list(texts)
        except httpx.TransportError as exc:
            raise VllmError(f"vLLM at {self.url} failed while answering ({type(exc).__name__}: {exc})") from exc
        yield Completion(texts, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))

    def prompt_logprobs(self, model: str, ids: list[int]) -> list[float | None]:
        """The log-probability of each token of ``ids`` given the ones before it (None for the first)."""
        body = {"model": model, "prompt": ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
        data = self._post("/v1/completions", body).json()
        rows = data["choices"][0]["prompt_logprobs"]
        return [None if row is None else float(row[str(token)]["logprob"]) for token, row in zip(ids, rows)]


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error or body.get("message") or body.get("detail") or body)[:500]
    return str(body)[:500]
