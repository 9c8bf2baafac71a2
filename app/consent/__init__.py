"""Consent versions and documents, consent records, withdrawals and the consent gate."""
