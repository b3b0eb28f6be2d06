"""The Amplitude side: the ingestion client and its parts (request packing, lanes, the circuit
breaker, id validation)."""
