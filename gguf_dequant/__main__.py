"""``python -m gguf_dequant``: the same as the ``gguf-dequant`` command."""

import sys

from .cli import main

sys.exit(main())
