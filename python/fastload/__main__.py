"""``python -m fastload``: see ``fastload._cli``."""

from ._cli import main

raise SystemExit(main())
