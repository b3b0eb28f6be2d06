"""Tests of currents_export.ledger."""
