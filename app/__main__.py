"""`python -m app`: run the driver."""

from app.main import main

raise SystemExit(main())
