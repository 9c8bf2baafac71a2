#!/usr/bin/env bash
# Install the Debian packages wellpanel's targets need, but only those whose programs are missing.
#
#   scripts/install-system-deps.sh [venv] [postgres] [browser] [fonts] [faketime] [wrk]
#
#   venv      python3's venv module with ensurepip           -> python3-venv
#   postgres  PostgreSQL server binaries (initdb, pg_ctl)     -> postgresql
#   browser   Debian's Chromium for the Playwright tests      -> chromium chromium-driver
#             and a CJK font for the Chinese pages            -> fonts-noto-cjk
#   fonts     Noto Sans CJK, for the consent PDF's Chinese     -> fonts-noto-cjk
#             text (app/consent/copy.py; `make demo` too)
#   faketime  libfaketime, for `make test-at`                  -> faketime
#   wrk       the HTTP load generator of bench/api.py          -> wrk
#
# Nothing is installed when everything is present (no network, no root needed). Otherwise the
# script runs `apt-get update` once and installs the missing packages: directly as root, through
# sudo when available, and else prints the command to run and exits non-zero.
# PostgreSQL refuses to run as root; as root the test suite runs it as the `postgres` system user,
# which Debian's package creates (this script creates it when the binaries come from elsewhere).
set -euo pipefail

want=("$@")
if [ ${#want[@]} -eq 0 ]; then
    want=(venv postgres browser)
fi

missing=()
for component in "${want[@]}"; do
    case "$component" in
        venv)
            python="${PYTHON:-python3}"
            if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
                missing+=(python3-venv)
            fi
            ;;
        postgres)
            if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null \
                && ! command -v initdb >/dev/null 2>&1; then
                missing+=(postgresql)
            fi
            ;;
        browser)
            if [ ! -x /usr/bin/chromium ]; then
                missing+=(chromium fonts-liberation)
            fi
            if [ ! -x /usr/bin/chromedriver ]; then
                missing+=(chromium-driver)
            fi
            # Chinese pages need a CJK font to render (and to be readable in screenshots).
            if ! compgen -G '/usr/share/fonts/opentype/noto/NotoSansCJK*' >/dev/null; then
                missing+=(fonts-noto-cjk)
            fi
            ;;
        fonts)
            if [ ! -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc ]; then
                missing+=(fonts-noto-cjk)
            fi
            ;;
        faketime)
            if ! command -v faketime >/dev/null 2>&1; then
                missing+=(faketime)
            fi
            ;;
        wrk)
            if ! command -v wrk >/dev/null 2>&1; then
                missing+=(wrk)
            fi
            ;;
        *)
            echo "install-system-deps: unknown component '$component' (venv, postgres, browser, fonts, faketime, wrk)" >&2
            exit 2
            ;;
    esac
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null 2>&1 && [ -t 0 ]; then
        as_root=(sudo)                 # may ask for a password
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)              # no terminal (CI): only passwordless sudo
    else
        echo "install-system-deps: missing Debian packages: ${missing[*]}" >&2
        echo "  install them as root with:" >&2
        echo "    apt-get update && apt-get install --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    echo "install-system-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

# As root, the test suite starts PostgreSQL as the `postgres` system user.
if [ "$(id -u)" -eq 0 ] && [[ " ${want[*]} " == *" postgres "* ]] \
    && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi
