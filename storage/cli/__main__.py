import sys

from storage.cli.main import main

sys.exit(main())
