"""Benchmark harness for currents-export: ``python -m bench`` (see ``bench/cli.py``).

One run generates Currents files, starts the Amplitude emulator in its own process and
measures, on the same files and the same emulator: a bare fastavro decode loop, the
``currents-export replay`` CLI end to end, the official ``amplitude-analytics`` SDK, the
replay's peak memory at two sizes, and the emulator alone; and (f) the time the replay takes
to deliver under Amplitude's rate limits (the emulator's project caps and per-id limits)
against the ideal. ``--only rate`` / ``--only unlimited`` runs one of the two sets. The result
is a Markdown report.

The modules, by what they do: ``settings`` (sizes), ``inputs`` (the files), ``decode`` (a),
``replay`` (b), ``sdk`` (c; ``sdk_client`` is the SDK's own child process), ``emulator`` (the
emulator's process, and (e) the emulator alone), ``rate`` (f: its cases, bounds and
replays started together), ``process`` (measured child processes;
``rusage`` is their launcher, a module of its own so that it stays small: its size is the
floor of the ``ru_maxrss`` it reports), ``events`` (the project's mapping, also used by the
SDK's child), ``checks``, ``results`` (figures, targets, the machine), ``report``,
``runner`` and ``cli``.
"""
