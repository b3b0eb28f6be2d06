"""The tests, laid out like the code they test.

- ``amplitude/``, ``currents/``, ``ledger/``, ``mapping/``, ``kit/``: one directory per
  package of ``currents_export``, one module per module tested;
- ``test_*.py`` here: the modules at the top of ``currents_export`` (apikey, aws_events,
  deadletter, display, progress, redrive, status);
- ``e2e/``: the whole tool at work (replay, backfill, the Lambda, workers, kills, chaos,
  faults, hostile files, schema drift, memory, secrets at rest, the CLI, the package and the
  benchmark harness);
- ``support/``: helpers the test modules share (no test module imports another);
- ``conftest.py``: the shared fixtures (a real emulator, moto's server, Currents files).
"""
