"""Safety events followed up: on-call alerts, escalation, the queue, contact reveal."""
