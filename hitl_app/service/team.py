"""What a clinical team does with a question set: take the next item, skip it, settle disagreements.

The queue (``feedback.queue``) decides who gets which item; this module shows the item with its
candidates and records claims and skips. Every reviewer of an item sees the same generation (the
one its first claim was shown), so their judgements can be compared. Candidates are generated
ahead for the next few items while the model is idle (``Pregenerator``), tagged with the version
that wrote them; an item nobody has taken yet whose candidates came from an older version gets
new ones when it is next shown.

Judgements of a queued item are the usual accept, edit, reject and rank on its ``generation_id``
(``review.py``); only a reviewer who took the item with Next may judge it. Adjudication is an
admin's: a judgement that ``settles`` a disputed item, stored as its own record.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable

from ..core.errors import NotFoundError, UserError
from ..feedback.queue_records import Claim, QueueItem, Skip, item_prompt
from ..feedback.question_sets import Columns
from ..feedback.ranking import parse_order
from ..feedback.records import Generation, has_high
from ..feedback.team import group_by_item, item_state
from .base import Caller, ServiceBase
from .importing import ImportReport, import_questions
from .team_views import AdjudicationItem, AdjudicationReply, NextReply, ProgressView, ReviewerJudgement

log = logging.getLogger("hitl_app.service")

QUEUE_USER = "queue"  # the reviewer recorded on candidates generated for a queued item
_CLAIM_ATTEMPTS = 8  # items tried when colleagues keep taking the one this reviewer was about to get


class TeamActions(ServiceBase):
    """The review queue: import, Next, skip, adjudicate."""

    # ----- import -----
    def import_file(
        self,
        path: Path,
        caller: Caller,
        columns: Columns | None = None,
        batch: str | None = None,
        priority: int = 0,
        progress: Callable[[float, str], None] | None = None,
    ) -> ImportReport:
        """Import a question set into the queue (admin; see ``importing.import_questions``).

        Raises:
            PermissionDeniedError: the caller is not an admin.
            UserError: the file, a column or a question is unusable; nothing is stored.
        """
        self._require_admin(caller, "import question sets")
        report = import_questions(
            path, caller.username, self.queue, self.safety, redact=self.settings.redact_phi,
            columns=columns, batch=batch, priority=priority, progress=progress,
        )  # fmt: skip
        self.pregenerator.wake()
        return report

    # ----- taking items -----
    def next_item(self, caller: Caller) -> NextReply:
        """The next item for this reviewer with its candidates; the item's slot is taken for them.

        Their own open item comes back until they judge or skip it. Candidates are generated now
        if none were generated ahead for the serving version.
        """
        self.sync_queue()
        for _ in range(_CLAIM_ATTEMPTS):
            item = self.queue.peek(caller.username)
            if item is None:
                return NextReply.of(None, None, None, self.progress(caller))
            mine = self.queue.claim_of(item.id, caller.username)
            if mine is not None:
                return self._shown(item, self.ledger.generation(mine.generation_id), caller)
            gen = self._item_generation(item)
            with self.queue.store.locked():
                self.queue.refresh()  # what colleagues (in any process) took meanwhile
                if self.queue.available(item.id, caller.username):
                    self.queue.store.append(Claim(reviewer=caller.username, item_id=item.id, generation_id=gen.id))
                    self.queue.refresh()
                    self.pregenerator.wake()
                    return self._shown(item, gen, caller)
            log.info("%s: item %s was taken meanwhile; trying the next", caller.username, item.id)
        raise UserError("the queue is busy: colleagues took the items offered to you; press Next again")

    def skip(self, item_id: str, caller: Caller) -> ProgressView:
        """Pass on an item: its slot is free again, and it is not offered to this reviewer again.

        Raises:
            NotFoundError: no such item.
            UserError: the reviewer did not take it, or already judged or skipped it.
        """
        self.sync_queue()
        item = self.queue.item(item_id)
        if item is None:
            raise NotFoundError(f"unknown queued item {item_id!r}")
        if self.queue.claim_of(item_id, caller.username) is None:
            raise UserError("you have not taken this item; press Next to get one")
        if item_id in self._judged_by.get(caller.username, ()):
            raise UserError("you already judged this item; it cannot be skipped")
        if self.queue.skipped(item_id, caller.username):
            raise UserError("you already skipped this item")
        self.queue.store.append(Skip(reviewer=caller.username, item_id=item_id))
        self.queue.refresh()
        log.info("%s: skipped item %s", caller.username, item_id)
        return self.progress(caller)

    def progress(self, caller: Caller) -> ProgressView:
        """This reviewer's progress through the queue (after reading what was imported or judged meanwhile)."""
        self.sync_queue()
        return ProgressView.of(self.queue.progress(caller.username), self.queue.size, self.queue.k)

    def _shown(self, item: QueueItem, gen: Generation, caller: Caller) -> NextReply:
        batch = self.queue.batches.get(item.batch_id)
        return NextReply.of(item, gen, batch.name if batch else None, self.progress(caller))

    def _item_generation(self, item: QueueItem) -> Generation:
        """The candidates to show for ``item``: those its first reviewer saw, else the newest for the
        serving version, else new ones (generated now, one item at a time)."""
        with self._item_lock(item.id):
            claim = self.queue.first_claim(item.id)
            if claim is not None:
                return self.ledger.generation(claim.generation_id)
            made = self.ledger.item_generations(item.id)
            if made and made[-1].version == self.models.version:
                return made[-1]
            return self.generate_for_item(item)

    def generate_for_item(self, item: QueueItem) -> Generation:
        """Generate and store candidates for a queued item (a refusal when the input guard refuses it)."""
        caller = Caller(QUEUE_USER)
        prompt = item_prompt(item)
        refused = self._refused(prompt, caller, item_id=item.id)
        if refused is not None:
            return refused
        k = self.settings.candidates
        answer = self.models.generate(prompt, k=self.sampled_for(k))
        flags = [self.safety.check_answer(prompt, text) for text in answer.candidates]
        gen = self._store_generation(
            caller, prompt, answer.candidates, version=answer.version, sampling=answer.sampling,
            prompt_tokens=answer.prompt_tokens, flags=flags, item_id=item.id, scored=True, shown=k,
        )  # fmt: skip
        self.note_rewards(gen)
        if any(has_high(f) for f in gen.flags):
            self.queue.reprioritise(item.id, flagged=True)  # a flagged answer moves its item up
        return gen

    def _item_lock(self, item_id: str) -> threading.Lock:
        with self._queue_lock:
            return self._item_locks[item_id]

    # ----- adjudication -----
    def adjudications(self, caller: Caller) -> list[AdjudicationItem]:
        """Items whose reviewers disagree, with every judgement side by side (admin), oldest first.

        Raises:
            PermissionDeniedError: the caller is not an admin.
        """
        self._require_admin(caller, "see the adjudication list")
        self.sync_queue()
        items, _ = group_by_item(self.ledger.judgements())
        out = []
        for item_id, review in items.items():
            if item_state(review, self.queue.k, self.settings.consensus_threshold) != "disputed":
                continue
            gen = review.reviews[0].generation
            item = self.queue.item(item_id)
            batch = self.queue.batches.get(item.batch_id) if item else None
            out.append(
                AdjudicationItem(
                    item_id=item_id, generation_id=gen.id, prompt=gen.prompt, candidates=gen.candidates,
                    version=gen.version, batch=batch.name if batch else None,
                    support=review.resolution(self.settings.consensus_threshold).support,
                    judgements=[ReviewerJudgement.of(j.feedback) for j in review.reviews],
                )
            )  # fmt: skip
        return out

    def adjudicate(
        self,
        item_id: str,
        caller: Caller,
        action: str,
        candidate: int = 0,
        order: list | str | None = None,
        reason: str | None = None,
    ) -> AdjudicationReply:
        """Settle a disputed item (admin): accept or reject a candidate, or rank the candidates.

        Raises:
            PermissionDeniedError: the caller is not an admin.
            NotFoundError: no such item.
            UserError: the item is not waiting for adjudication, or the decision is incomplete.
        """
        self._require_admin(caller, "adjudicate")
        waiting = {a.item_id: a for a in self.adjudications(caller)}
        if item_id not in waiting:
            if self.queue.item(item_id) is None:
                raise NotFoundError(f"unknown queued item {item_id!r}")
            raise UserError(f"item {item_id} is not waiting for adjudication (its reviewers agree, or are not all in yet)")
        gen = self.ledger.generation(waiting[item_id].generation_id)
        if action == "rank":
            ranking = parse_order(order if order is not None else [], len(gen.candidates))
            fb = self._judge(gen.id, caller, action="rank", ranking=ranking, settles=item_id)
        elif action == "accept":
            fb = self._judge(gen.id, caller, action="accept", candidate=candidate, settles=item_id)
        elif action == "reject":
            if not isinstance(reason, str) or not reason.strip():
                raise UserError("a rejection needs a reason")
            fb = self._judge(gen.id, caller, action="reject", candidate=candidate, reason=reason, settles=item_id)
        else:
            raise UserError(f"an adjudication accepts, rejects or ranks; {action!r} is none of these")
        return AdjudicationReply(
            item_id=item_id, feedback_id=fb.id, action=fb.action, candidate=fb.candidate, ranking=fb.ranking,
            adjudicator=caller.username,
        )  # fmt: skip


class Pregenerator:
    """Generates candidates for the next few queued items while the model is idle.

    A daemon thread wakes when an item is taken or imported (and every few seconds), waits until
    no answer has been generated for ``QUIET_S`` seconds, and fills in the first ``--pregenerate``
    items that have no candidates from the serving version, one item per quiet spell. Each item is
    generated under its own lock, so Next never gets a second set for the same item. A clinician
    who asks while an item is being prepared waits for at most that one generation.

    Args:
        service: the team actions to generate through.
        ahead: how many items to keep ready.
    """

    POLL_S = 5.0
    QUIET_S = 3.0  # no answer for this long: nobody is waiting on the model

    def __init__(self, service: TeamActions, ahead: int) -> None:
        self.service = service
        self.ahead = ahead
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (nothing to do with ``--pregenerate 0``)."""
        if self.ahead > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pregenerate", daemon=True)
            self._thread.start()

    def wake(self) -> None:
        """Look for items to prepare now rather than at the next poll."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread after the item in hand."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def pending(self) -> list[QueueItem]:
        """The upcoming items without candidates from the serving version."""
        service = self.service
        service.sync_queue()
        version = service.models.version
        out = []
        for item in service.queue.upcoming(self.ahead):
            made = service.ledger.item_generations(item.id)
            if not made or made[-1].version != version:
                out.append(item)
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.POLL_S)
            self._wake.clear()
            while not self._stop.is_set():
                if not self.service.models.activity.wait_quiet(self.QUIET_S, self._stop):
                    return
                todo = self.pending()
                if not todo:
                    break
                try:
                    self.service._item_generation(todo[0])
                except Exception:  # a failed generation must not end the thread; the item is retried
                    log.exception("generating candidates ahead for item %s failed", todo[0].id)
                    break
