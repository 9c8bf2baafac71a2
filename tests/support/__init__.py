"""Helpers the tests share: a real PostgreSQL server, a real SMTP server, a controllable clock."""
