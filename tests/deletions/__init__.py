"""Tests of currents_export.deletions."""
