import sys

from eventlm.cli import main

sys.exit(main())
