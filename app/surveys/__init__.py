"""Questionnaires: instruments as data, answer validation, scoring and safety flags."""
