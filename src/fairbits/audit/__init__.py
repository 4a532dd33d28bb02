"""Audit: plan (spec → cells), the local runner, and the result store."""
