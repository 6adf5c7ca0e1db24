import sys

from armor_rx.cli import main

sys.exit(main())
