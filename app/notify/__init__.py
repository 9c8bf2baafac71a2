"""The outbox of messages to participants and its delivery over SMTP (or the console)."""
