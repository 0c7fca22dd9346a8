"""The command line: ``python main.py`` or the ``hitl-app`` console script; ``--help`` lists every flag."""

from __future__ import annotations

import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    """Parse settings, load the model, and serve the app until interrupted."""
    from .core.config import Settings, describe_settings_error

    try:
        settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        print(f"main.py: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    from .core.console import configure

    configure(settings.log_level)

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
        service.models.close()
        service.trainer.stop()
    return 0
