"""Start the clinician feedback loop: ``python main.py --help`` lists every flag."""

import sys

from hitl_app.cli import main

if __name__ == "__main__":
    sys.exit(main())
