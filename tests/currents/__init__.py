"""Tests of currents_export.currents."""
