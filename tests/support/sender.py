"""A sender in its own process: runs one outbox delivery batch against a database and an SMTP
server, as the scheduler or an API worker does. Tests kill it mid-batch.

    python -m tests.support.sender DATABASE_URL NOW_ISO SMTP_PORT TIMEOUT LEASE
"""

from __future__ import annotations

import sys
from datetime import datetime

from app.config import Settings
from app.db import make_engine
from app.notify import service as notify
from app.notify.channels import SMTPChannel


def main(url: str, now: str, port: str, timeout: str, lease: str) -> None:
    settings = Settings(database_url=url, environment="test",
                        secret_key="test-secret-0123456789", smtp_host="127.0.0.1",
                        smtp_port=int(port), smtp_connect_timeout=float(timeout),
                        smtp_send_timeout=float(timeout), outbox_lease_seconds=float(lease),
                        base_url="http://testserver", log_json=False)
    counts = notify.deliver_due(make_engine(url), settings, SMTPChannel(settings),
                                now=datetime.fromisoformat(now))
    print(counts, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
