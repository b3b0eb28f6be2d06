"""The local kit: an emulator of Amplitude's ingestion APIs and a generator of synthetic
Braze Currents files, for tests, benchmarks and the ``emulator``, ``fixtures`` and ``demo``
commands.

Nothing in the product imports this package, and the Lambda package leaves it out. The
emulator imports nothing from ``currents_export`` outside the kit: it is the oracle the
tests trust, so it must not share code with what it judges.
"""
