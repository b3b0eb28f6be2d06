"""currents-export: move Braze Currents data (Avro on S3) into Amplitude."""

__version__ = "0.1.0"
