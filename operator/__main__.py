import sys

from hetsched.operator.cli import main

sys.exit(main())
