import sys

from he_leak.cli import main

sys.exit(main())
