import sys

from armor_rx._quick import main

sys.exit(main())
