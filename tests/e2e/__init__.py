"""The whole tool at work: end-to-end runs through the CLI, the Lambda, worker processes and
the package, against the emulator and moto's server on loopback."""
