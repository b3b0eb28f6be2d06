"""Tests of currents_export.kit."""
