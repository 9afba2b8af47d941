"""``python -m ui`` is ``python run.py --ui``."""

import sys

from ui.server import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
