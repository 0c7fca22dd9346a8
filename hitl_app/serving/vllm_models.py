"""Answers from a vLLM OpenAI server, with versions published into it as LoRA adapters.

``VllmModels`` stands where ``ModelManager`` stands for the local backend, with the same calls
(``generate``, ``stream``, ``activate``, ``sync``, ``watch``, ``version``), so the service does not
know which backend answers. vLLM batches concurrent requests itself, so there is no generation
lock; the guarantees the local manager gets from its lock come from these rules instead:

- **Which version answers** is decided when a request starts, and the request names it in its
  ``model`` field, so every answer comes from one version and is tagged with it.
- **A swap** loads the new version under its own name, asks it for a one-token probe answer, and
  only then makes it the serving name. Answers in flight finish on the version they started with.
- **A failed load** leaves the serving version as it was; the failure is kept for the status
  panel, and the same version is tried again after ``RETRY_S``.
- **Unloading**: beyond ``max_loaded`` versions, the oldest are unloaded, never the serving one nor
  one still answering a request.
- **Restarts**: at start-up the app serves ACTIVE's version; every ``CHECK_S`` it checks that the
  serving version is still loaded (an operator may have restarted vLLM) and loads it again if not.
  A server the app started itself is started again if it died.

Evaluation, training and the reward model stay in the trainer process, unchanged.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from ..core.chat import Message, chat_prompt
from ..core.errors import UserError
from ..evaluation.logprobs import render_reply
from ..feedback.records import BASE_VERSION, Sampling
from ..versions.registry import Registry
from .activity import AnswerActivity
from .generation import Answer, StreamUpdate, encode_messages
from .swap import ActiveWatcher
from .vllm_client import Completion, VllmClient, VllmError

if TYPE_CHECKING:
    from ..evaluation.clinical_text import ClinicalTextJudge
    from ..evaluation.judge_cache import JudgeCache
    from .vllm_server import VllmServer

log = logging.getLogger(__name__)

IDENTITY = "base-identity"  # the zero adapter's name in vLLM (identity_adapter.py)
RETRY_S = 30.0  # a version that failed to load is tried again after this long
CHECK_S = 2.0  # how often the watcher checks that vLLM still has the serving version
_PROBE = [{"role": "user", "content": "Reply with one word: ready?"}]


class LoadFailure(BaseModel):
    """A version that could not be served, and why."""

    model_config = ConfigDict(frozen=True)

    version: str = Field(description="the version that failed to load")
    error: str = Field(description="what vLLM said")
    at: float = Field(description="when, in seconds since the epoch")


class BackendState(BaseModel):
    """The vLLM backend's state, as ``/status`` reports it."""

    model_config = ConfigDict(frozen=True)

    url: str = Field(description="the vLLM server's base URL")
    started_here: bool = Field(description="whether the app started the server (else an operator runs it)")
    loaded: list[str] = Field(description="versions loaded in vLLM, oldest first")
    max_loaded: int = Field(description="--vllm-max-loaded")
    last_swap_ms: int | None = Field(description="how long the last publish took, load and probe included")
    load_failure: LoadFailure | None = Field(description="the last version that failed to load, until one loads")


class VllmModels:
    """Answers and version swaps through a vLLM server; see the module docstring.

    Args:
        client: calls to the server.
        tokenizer: the base's tokenizer, to check a question fits before sending it, and for log-probs.
        registry: where versions are published and the ACTIVE pointer lives.
        sampling: default decoding settings.
        system_prompt: the system message put before every question (None for none).
        context_length: the model's context, in tokens.
        max_loaded: versions kept loaded in vLLM (``--vllm-max-loaded``).
        server: the server process when the app started it (restarted if it dies), else None.
        judges: where the clinical-text judge's calibration is kept.
        adapter_path: how the server sees a version's adapter folder (default: this machine's path).
        identity: the zero adapter's folder as the server sees it (``identity_adapter.py``): ``base``
            answers through it, so that no request runs without an adapter. None: through vLLM's
            plain base, for a vLLM whose mixed batches keep base requests apart.
    """

    fast = None  # no in-process fast copy: vLLM decodes
    threads_policy: Callable[[], int] | None = None  # answers take no CPU threads here

    def __init__(
        self,
        client: VllmClient,
        tokenizer,
        registry: Registry,
        sampling: Sampling,
        system_prompt: str | None,
        context_length: int,
        max_loaded: int = 4,
        server: VllmServer | None = None,
        judges: JudgeCache | None = None,
        adapter_path: Callable[[str], str] | None = None,
        identity: str | None = None,
    ) -> None:
        self.client = client
        self.tokenizer = tokenizer
        self.registry = registry
        self.sampling = sampling
        self.system_prompt = system_prompt
        self.context_length = context_length
        self.max_loaded = max_loaded
        self.server = server
        self.judges = judges
        self.adapter_path = adapter_path or (lambda version: str(registry.adapter_dir(version).resolve()))
        self.identity = identity
        self._identity_loaded = False
        self.activity = AnswerActivity()
        self.version = BASE_VERSION  # the version new requests are answered by
        self.loaded: collections.OrderedDict[str, None] = collections.OrderedDict()  # oldest first
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.load_failure: LoadFailure | None = None
        self.last_swap_s: float | None = None
        self._state = threading.Lock()  # guards version, loaded, in_flight
        self._swap = threading.Lock()  # one load or unload at a time
        self._checked = 0.0
        self._judge: ClinicalTextJudge | None = None
        self._watcher = ActiveWatcher(self.sync, lambda: self.version)

    # ----- versions -----
    def _ensure_loaded(self, version: str) -> None:
        """Load ``version`` into vLLM unless it is there. Call under ``_swap``.

        Raises:
            NotFoundError: the version is not published.
            VllmError: vLLM refused to load it.
        """
        if version == BASE_VERSION:
            if self.identity is not None and not self._identity_loaded:
                self.client.load(IDENTITY, self.identity)
                self._identity_loaded = True
            return
        if version in self.loaded:
            return
        path = self.adapter_path(version)  # NotFoundError for an unknown version, before asking vLLM
        self.client.load(version, path)
        with self._state:
            self.loaded[version] = None

    def activate(self, version: str) -> float:
        """Serve ``version`` from now on: load it, probe it, then switch; returns the seconds it took.

        Raises:
            NotFoundError: the version is not published.
            VllmError: vLLM refused to load it, or the probe answer failed; the serving version is
                unchanged and the failure is kept for the status panel.
        """
        started = time.perf_counter()
        with self._swap:
            try:
                self._ensure_loaded(version)
                self.client.chat(self.served_name(version), _PROBE, 1, Sampling(do_sample=False, temperature=0.0, top_p=1.0, max_new_tokens=1))
            except VllmError as exc:
                self.load_failure = LoadFailure(version=version, error=str(exc), at=time.time())
                log.error("could not serve %s through vLLM; still serving %s: %s", version, self.version, exc)
                raise
            with self._state:
                previous, self.version = self.version, version
            self.load_failure = None
            self._evict()
        self.last_swap_s = time.perf_counter() - started
        log.info("now serving %s through vLLM (was %s; load and probe %.0f ms)", version, previous, self.last_swap_s * 1e3)
        return self.last_swap_s

    def _evict(self) -> None:
        """Unload the oldest versions beyond ``max_loaded``, skipping the serving one and any answering. Under ``_swap``."""
        with self._state:
            spare = [v for v in self.loaded if v != self.version and not self.in_flight[v]]
            extra = max(0, len(self.loaded) - self.max_loaded)
            chosen = spare[:extra]
        for version in chosen:
            try:
                self.client.unload(version)
            except VllmError as exc:
                log.warning("could not unload %s from vLLM: %s", version, exc)
                continue
            with self._state:
                self.loaded.pop(version, None)

    def sync(self) -> bool:
        """Serve whatever ACTIVE names, if that is not already served. Returns whether it swapped.

        A version that failed to load is tried again after ``RETRY_S``, not at every poll; the
        serving version is reloaded if vLLM lost it (``CHECK_S``).
        """
        if time.monotonic() - self._checked >= CHECK_S:
            self._checked = time.monotonic()
            self.check_server()
        target = self.registry.active().version
        if target == self.version:
            return False
        failure = self.load_failure
        if failure is not None and failure.version == target and time.time() - failure.at < RETRY_S:
            return False
        try:
            self.activate(target)
        except (VllmError, UserError):
            return False  # kept in load_failure, logged by activate
        return True

    def check_server(self) -> None:
        """Start the app's own server again if it died, and load the serving version again if vLLM lost it."""
        if self.server is not None and not self.server.running():
            log.error("the vLLM server exited (status %s); starting it again", self.server.process.returncode)
            self.server.start()
        try:
            served = set(self.client.served())
        except VllmError as exc:
            log.warning("cannot reach vLLM to check what it serves: %s", exc)
            return
        with self._swap:
            with self._state:
                lost = [v for v in self.loaded if v not in served]
                for version in lost:
                    self.loaded.pop(version)
            if self._identity_loaded and IDENTITY not in served:
                lost.append(IDENTITY)
                self._identity_loaded = False
            if lost:
                log.warning("vLLM no longer serves %s (restarted?); loading %s again", ", ".join(lost), self.version)
            if self.version not in self.loaded:
                try:
                    self._ensure_loaded(self.version)
                except VllmError as exc:
                    self.load_failure = LoadFailure(version=self.version, error=str(exc), at=time.time())
                    log.error("could not load the serving version %s into vLLM again: %s", self.version, exc)

    def watch(self, interval_s: float = 0.05) -> None:
        """Follow the ACTIVE pointer (and vLLM's health) in a background thread."""
        self._watcher.start(interval_s)

    def close(self) -> None:
        """Stop following ACTIVE, and stop the server if the app started it."""
        self._watcher.stop()
        self.client.close()
        if self.server is not None:
            self.server.stop()

    def state(self) -> BackendState:
        """What the status panel shows about vLLM."""
        with self._state:
            loaded = list(self.loaded)
        return BackendState(
            url=self.client.url, started_here=self.server is not None, loaded=loaded, max_loaded=self.max_loaded,
            last_swap_ms=None if self.last_swap_s is None else round(self.last_swap_s * 1e3),
            load_failure=self.load_failure,
        )  # fmt: skip

    # ----- generation -----
    def messages(self, prompt: str) -> list[Message]:
        """The chat messages for a question: the system prompt (if any) and the user's turn."""
        return chat_prompt(prompt, self.system_prompt)

    def served_name(self, version: str) -> str:
        """The name vLLM answers ``version`` under: the version's own, or the identity adapter's for ``base``."""
        return IDENTITY if version == BASE_VERSION and self.identity is not None else version

    def _begin(self, version: str | None) -> str:
        """The version a new request is answered by (loaded if needed), counted as in flight until ``_end``."""
        with self._state:
            chosen = version or self.version
            self.in_flight[chosen] += 1  # from here it is never unloaded
            ready = chosen in self.loaded if chosen != BASE_VERSION else self.identity is None or self._identity_loaded
        if not ready:
            try:
                with self._swap:
                    self._ensure_loaded(chosen)
            except BaseException:
                self._end(chosen)
                raise
        return chosen

    def _end(self, version: str) -> None:
        with self._state:
            self.in_flight[version] -= 1
            over = len(self.loaded) > self.max_loaded
        if over and self._swap.acquire(blocking=False):  # a swap in progress evicts on its own
            try:
                self._evict()
            finally:
                self._swap.release()

    @contextlib.contextmanager
    def _answering(self, version: str | None) -> Iterator[str]:
        """The block answers with ``version`` (None: the serving one), counted in flight and as an answer."""
        chosen = self._begin(version)
        try:
            with self.activity.answering():
                yield chosen
        finally:
            self._end(chosen)

    def _prepare(self, prompt: str, sampling: Sampling | None) -> tuple[list[Message], Sampling, int]:
        sampling = sampling or self.sampling
        messages = self.messages(prompt)
        inputs = encode_messages(self.tokenizer, messages, self.context_length, sampling.max_new_tokens)
        return messages, sampling, int(inputs["input_ids"].shape[1])

    def generate(self, prompt: str, k: int = 1, sampling: Sampling | None = None, version: str | None = None) -> Answer:
        """Answer a question with ``k`` candidates from one vLLM request (``n=k``).

        ``version`` answers with another published version (or ``base``) than the serving one.

        Raises:
            UserError: the prompt is empty or too long.
            NotFoundError: ``version`` is not published.
            VllmError: vLLM failed to answer.
        """
        messages, sampling, prompt_tokens = self._prepare(prompt, sampling)
        started = time.perf_counter()
        with self._answering(version) as chosen:
            done = self.client.chat(self.served_name(chosen), messages, k, sampling)
        return _answer(done, chosen, sampling, prompt_tokens, time.perf_counter() - started)

    def stream(self, prompt: str, k: int = 1, sampling: Sampling | None = None) -> Iterator[StreamUpdate]:
        """Stream ``k`` candidates from one vLLM request; the last update carries the ``Answer``.

        Raises:
            UserError: the prompt is empty or too long (before anything is sent).
            VllmError: vLLM failed to answer.
        """
        messages, sampling, prompt_tokens = self._prepare(prompt, sampling)
        started = time.perf_counter()
        with self._answering(None) as chosen:
            for item in self.client.stream_chat(self.served_name(chosen), messages, k, sampling):
                if isinstance(item, Completion):
                    answer = _answer(item, chosen, sampling, prompt_tokens, time.perf_counter() - started)
                    yield StreamUpdate(texts=list(answer.candidates), version=chosen, answer=answer)
                else:
                    yield StreamUpdate(texts=item, version=chosen)

    def start_compiled_decoding(self, *args, **kwargs) -> bool:
        """Nothing to compile here: vLLM decodes. Returns False."""
        return False

    # ----- judging text with the base model -----
    def clinical_text_nll(self, prompt: str, text: str) -> tuple[float, ClinicalTextJudge]:
        """How the base model reads ``text`` as the answer to ``prompt``: (NLL per token, the judge).

        The log-probabilities come from vLLM's base (``prompt_logprobs``); the judge from
        ``judges`` (the trainer calibrates it at its start), else calibrated here through vLLM.
        """
        from ..evaluation.clinical_text import ClinicalTextJudge
        from ..evaluation.evalsets import load_eval_questions

        if self._judge is None and self.judges is not None:
            self._judge = self.judges.read()
        if self._judge is None:
            questions = load_eval_questions()
            nll = [self.reply_nll(self.messages(q.question), q.reference) for q in questions]
            self._judge = ClinicalTextJudge.from_reference_nll(nll)
        return self.reply_nll(self.messages(prompt), text), self._judge

    def reply_nll(self, messages: list[Message], text: str) -> float:
        """The base's mean NLL per token of ``text`` as the reply to ``messages`` (leading part that fits)."""
        ids, start = render_reply(self.tokenizer, messages, text)
        ids = ids[: self.context_length]
        with self._answering(BASE_VERSION) as chosen:
            logprobs = self.client.prompt_logprobs(self.served_name(chosen), ids)[start:]
        scored = [lp for lp in logprobs if lp is not None]
        if not scored:
            raise UserError("the question leaves no room in the model's context to judge the answer")
        return -sum(scored) / len(scored)


def _answer(done: Completion, version: str, sampling: Sampling, prompt_tokens: int, seconds: float) -> Answer:
    return Answer(
        candidates=done.texts, version=version, sampling=sampling, prompt_tokens=done.prompt_tokens or prompt_tokens,
        new_tokens=done.new_tokens, seconds=seconds,
    )  # fmt: skip
