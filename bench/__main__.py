"""``python -m bench``: run the benchmark and write the Markdown report."""

from bench.cli import main

raise SystemExit(main())
