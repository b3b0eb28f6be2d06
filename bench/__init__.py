"""Benchmark harness for currents-export: ``python -m bench`` (see ``bench/cli.py``).

One run generates Currents files, starts the Amplitude emulator in its own process and
measures, on the same files and the same emulator: a bare fastavro decode loop, the
``currents-export replay`` CLI end to end, the official ``amplitude-analytics`` SDK, the
replay's peak memory at two sizes, and the emulator alone. The result is a Markdown table.
"""
