"""The command line: ``python main.py`` or the ``hitl-app`` console script; ``--help`` lists every flag.

Two subcommands work on the data folders without loading a model, also while the app runs:

- ``python main.py import FILE [--question-column COL] [--reference-column COL] [--batch NAME]``
  queues a question set (the app sees the new items at its next queue refresh);
- ``python main.py export --kind sft|dpo|kto|reward|raw --out DIR`` writes the reviewed set.

Every other flag of the app (``--feedback-dir``, ``--checkpoints-dir``, ``--no-redact-phi``,
``--reviews-per-item`` ...) is accepted after a subcommand and means what it means for the app.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime

from pydantic import ValidationError

SUBCOMMANDS = ("import", "export")


def main(argv: list[str] | None = None) -> int:
    """Parse settings, load the model, and serve the app until interrupted; or run a subcommand."""
    argv = sys.argv[1:] if argv is None else argv
    command, argv = (argv[0], argv[1:]) if argv and argv[0] in SUBCOMMANDS else (None, argv)
    parser = _subcommand_parser(command) if command else None
    extra = None
    if parser is not None:
        extra, argv = parser.parse_known_args(argv)
    from .core.config import Settings, describe_settings_error

    try:
        settings = Settings(_cli_parse_args=argv)
    except ValidationError as exc:
        print(f"main.py: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    from .core.console import configure

    configure(settings.log_level)
    if command is not None:
        return _run_subcommand(command, settings, extra)

    from .app import create_service, launch
    from .serving.base_model import ModelWheelMissing

    try:
        service = create_service(settings)
    except ModelWheelMissing as exc:
        print(f"main.py: {exc}", file=sys.stderr)
        return 1
    try:
        launch(settings, service)
    finally:
        service.close()
        service.models.close()
        service.trainer.stop()
    return 0


def _subcommand_parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"main.py {command}", epilog="Any flag of the app (e.g. --feedback-dir) may follow.", add_help=True
    )
    if command == "import":
        parser.add_argument("file", help="JSONL, CSV or Parquet file, or a folder saved by datasets")
        parser.add_argument("--question-column", help="column holding the question (default: guessed)")
        parser.add_argument("--reference-column", help="column holding a reference answer (optional)")
        parser.add_argument("--context-column", help="column holding context shown with the question (optional)")
        parser.add_argument("--id-column", help="column holding the item's own id (optional)")
        parser.add_argument("--batch", help="name of the batch (default: the file's name and the time)")
        parser.add_argument("--priority", type=int, default=0, help="queue priority of the items (higher first)")
    else:
        parser.add_argument("--kind", required=True, choices=["sft", "dpo", "kto", "reward", "raw"])
        parser.add_argument("--out", required=True, help="folder to write (replaced if a previous export)")
        parser.add_argument("--batch", help="only this batch (name or id)")
        parser.add_argument("--since", type=datetime.fromisoformat, help="only judgements from this date (ISO)")
        parser.add_argument("--until", type=datetime.fromisoformat, help="only judgements up to this date (ISO)")
        parser.add_argument("--resolved-only", action="store_true", help="only queued items the team resolved")
        parser.add_argument("--reviewer", help="only this reviewer's judgements")
        parser.add_argument("--include-held-out", action="store_true", help="include (and mark) the held-out slice")
        parser.add_argument("--name-reviewers", action="store_true", help="reviewer names instead of pseudonyms")
        parser.add_argument("--licence", default="other", help="licence named in the dataset card")
    return parser


def _run_subcommand(command: str, settings, args: argparse.Namespace) -> int:
    from .core.errors import UserError

    try:
        if command == "import":
            from .feedback.question_sets import Columns
            from .service.data_commands import import_command

            columns = Columns(question=args.question_column, reference=args.reference_column,
                              context=args.context_column, id=args.id_column)  # fmt: skip
            report = import_command(settings, args.file, f"{getpass.getuser()} (command line)", columns,
                                    args.batch, args.priority)  # fmt: skip
            print(report.summary())
        else:
            from .feedback.export import ExportFilter
            from .service.data_commands import export_command

            filters = ExportFilter(batch=args.batch, since=args.since, until=args.until, resolved_only=args.resolved_only,
                                   reviewer=args.reviewer, include_held_out=args.include_held_out)  # fmt: skip
            summary = export_command(settings, args.kind, args.out, filters, args.name_reviewers, args.licence)
            print(f"exported {summary.rows} {summary.kind} row(s) from {summary.judgements} judgement(s) to {summary.out}")
    except UserError as exc:
        print(f"main.py {command}: {exc}", file=sys.stderr)
        return 2
    return 0
