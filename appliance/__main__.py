"""Allow `python -m appliance` as a synonym for the `passel` command."""

from appliance.cli import main

raise SystemExit(main())
