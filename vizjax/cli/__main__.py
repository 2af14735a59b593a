import sys

from vizjax.cli import main

sys.exit(main())
