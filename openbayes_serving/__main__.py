"""python -m openbayes_serving -> the command line."""

from .cli import main

raise SystemExit(main())
