import sys

from alara.cli import main

sys.exit(main())
