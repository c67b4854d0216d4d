"""`python -m letcolor`: see letcolor.cli."""

from letcolor.cli import main

raise SystemExit(main())
