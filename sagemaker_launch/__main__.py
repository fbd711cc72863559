"""``python -m sagemaker_launch``."""

import sys

from sagemaker_launch.cli import main

sys.exit(main())
