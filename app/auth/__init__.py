"""Participant magic links and browser sessions; staff tokens and roles."""
