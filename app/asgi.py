"""The ASGI application for uvicorn (`uvicorn app.asgi:app`), built from the environment.

Every process that imports this configures its own logging first: `wellpanel serve --workers N`
starts N worker processes that import it afresh, and none of them inherits the supervisor's
logging (JSON, redaction, bounded repetition; app/logging_setup.py).
"""

from app.config import get_settings
from app.logging_setup import configure_logging
from app.main import create_app

_settings = get_settings()
configure_logging(_settings.log_level, _settings.log_json)
app = create_app(_settings)
