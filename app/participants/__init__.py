"""Participants, their (separately stored) contact details, and screening tallies."""
