# wellpanel: the API, participant pages, scheduler and CLI in one image.
#   docker build -t wellpanel .
#   docker run --rm -p 8000:8000 -e WELLPANEL_SECRET_KEY=... wellpanel        (SQLite in /data)
# docker-compose.yml runs it on PostgreSQL.
FROM python:3.11-slim-bookworm

# pg_dump/pg_restore for `wellpanel backup/restore`; the major version matches the compose
# server (postgres:15) and the PostgreSQL the tests run against (Debian 12's). fonts-noto-cjk:
# Chinese text in the consent PDF (app/consent/copy.py).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client-15 fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /app

# Dependencies first (a layer that only changes with pyproject.toml).
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project. It is installed in editable mode on purpose: the app finds surveys/, migrations/
# and alembic.ini next to its package, here under /app.
COPY README.md alembic.ini ./
COPY app ./app
COPY analysis ./analysis
COPY migrations ./migrations
COPY surveys ./surveys
RUN pip install --no-deps -e . && python -m compileall -q app analysis

# Run as an unprivileged user; /data holds the SQLite database when no PostgreSQL is configured.
RUN useradd --system --uid 10001 --home-dir /data --create-home --shell /usr/sbin/nologin wellpanel
USER wellpanel
RUN mkdir -p /data/exports  # owned by wellpanel, so the compose volume mounted here is writable
ENV WELLPANEL_DATABASE_URL=sqlite:////data/wellpanel.db
VOLUME ["/data"]

EXPOSE 8000
CMD ["wellpanel", "serve", "--host", "0.0.0.0"]
