"""The trainer's status file: state, progress and last error, shared between the app and the trainer.

The trainer process writes it as a round goes; the app reads it for the status panel and
``/status``, and marks it failed when the process dies mid-round.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..core.files import atomic_write_text
from ..feedback.records import utc_now
from ..versions.manifest import TrainerStatus

log = logging.getLogger(__name__)

STATUS_FILE = "trainer_status.json"


class StatusFile:
    """The trainer's status, shared between processes through one atomically replaced file.

    Args:
        checkpoints_dir: the folder of versions; the file is ``STATUS_FILE`` in it.
    """

    def __init__(self, checkpoints_dir: Path) -> None:
        self.path = Path(checkpoints_dir) / STATUS_FILE

    def read(self) -> TrainerStatus:
        """The last written status; idle if none was written, failed if the file is unreadable."""
        try:
            return TrainerStatus.model_validate_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return TrainerStatus()
        except ValueError as exc:
            log.error("unreadable trainer status %s: %s", self.path, exc)
            return TrainerStatus(state="failed", last_error=f"unreadable status file: {exc}")

    def write(self, **changes) -> TrainerStatus:
        """Update some fields of the status and persist it."""
        status = self.read().model_copy(update={**changes, "updated_at": utc_now()})
        atomic_write_text(self.path, status.model_dump_json(indent=2))
        return status
