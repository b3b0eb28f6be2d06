"""The Amplitude side: the ingestion client and a local emulator of its HTTP APIs."""
