"""Start the clinician feedback loop: ``python main.py --help`` lists every flag."""

from __future__ import annotations

import logging
import sys

from pydantic import ValidationError


def main(argv: list[str] | None = None) -> int:
    """Parse settings, load the model, and serve the app until interrupted."""
    from hitl_app.config import Settings, describe_settings_error

    try:
        settings = Settings(_cli_parse_args=sys.argv[1:] if argv is None else argv)
    except ValidationError as exc:
        print(f"main.py: {describe_settings_error(exc)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from hitl_app.app import create_service, launch
    from hitl_app.base_model import ModelWheelMissing

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


if __name__ == "__main__":
    sys.exit(main())
