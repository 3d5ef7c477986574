"""`python -m sensord`."""

from sensord._cli import main

raise SystemExit(main())
