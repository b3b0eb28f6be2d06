"""Tests of currents_export.amplitude."""
