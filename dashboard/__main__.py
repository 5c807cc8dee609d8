"""``python -m dashboard``: the dashboard on localhost, from any directory (see :mod:`dashboard.launch`)."""

from dashboard.launch import main

raise SystemExit(main())
