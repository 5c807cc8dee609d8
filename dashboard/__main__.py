"""``python -m perfmodel.dashboard``: the dashboard on localhost, from any directory (see :mod:`perfmodel.dashboard.launch`)."""

from perfmodel.dashboard.launch import main

raise SystemExit(main())
