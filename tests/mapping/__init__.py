"""Tests of currents_export.mapping."""
