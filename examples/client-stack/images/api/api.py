#!/usr/bin/python3
"""clientstack API: one program, three commands.

    api serve        HTTP on $PORT (default 8000)
                       GET /        JSON: version, site, visit counter (Redis), migrations (PostgreSQL)
                       GET /health  200 when PostgreSQL and Redis both answer, else 503
    api migrate      apply $MIGRATIONS_DIR/NNN_name.sql in order, each once, each in a transaction,
                     recorded in the table schema_migrations
    api healthcheck  exit 0 when http://127.0.0.1:$PORT/health answers 200

Settings (environment): DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD, REDIS_HOST, REDIS_PORT,
SITE_NAME, PORT, API_VERSION, MIGRATIONS_DIR. Only the Python standard library, psycopg2 and redis
(Debian's python3-psycopg2 and python3-redis).
"""
import datetime
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import redis

VERSION = os.environ.get("API_VERSION") or "dev"
PORT = int(os.environ.get("PORT", "8000"))
SITE_NAME = os.environ.get("SITE_NAME") or "unnamed-site"
MIGRATIONS_DIR = os.environ.get("MIGRATIONS_DIR", "/app/migrations")
MIGRATION_FILE = re.compile(r"^(\d+)_[A-Za-z0-9_.-]+\.sql$")
# Any constant: two `api migrate` at once (two hosts, a manual run) take turns.
MIGRATE_LOCK_ID = 4242_0001


def log(*parts):
    print("api:", *parts, file=sys.stderr, flush=True)


def pg_connect(timeout=3):
    return psycopg2.connect(
        host=os.environ.get("DB_HOST", "db"),
        port=int(os.environ.get("DB_PORT", "5432")),
        dbname=os.environ.get("DB_NAME", "app"),
        user=os.environ.get("DB_USER", "app"),
        password=os.environ.get("DB_PASSWORD", ""),
        connect_timeout=timeout,
        application_name=f"clientstack-api-{VERSION}",
    )


REDIS = redis.Redis(
    host=os.environ.get("REDIS_HOST", "redis"),
    port=int(os.environ.get("REDIS_PORT", "6379")),
    socket_connect_timeout=2,
    socket_timeout=2,
    decode_responses=True,
)


def iso(ts):
    return ts.isoformat() if isinstance(ts, datetime.datetime) else ts


def applied_migrations(cur):
    cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not cur.fetchone()[0]:
        return []
    cur.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
    return [{"version": v, "name": n, "applied_at": iso(t)} for v, n, t in cur.fetchall()]


# --------------------------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------------------------
class Handler(BaseHTTPRequestHandler):
    server_version = "clientstack-api"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def send_json(self, status, body):
        data = (json.dumps(body, indent=2) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self.health()
        elif path == "/":
            self.index()
        else:
            self.send_json(404, {"error": f"no such path: {path}"})

    def health(self):
        checks = {}
        try:
            conn = pg_connect(timeout=2)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
            finally:
                conn.close()
            checks["postgresql"] = "ok"
        except Exception as e:  # noqa: BLE001 -- any failure means "not healthy"
            checks["postgresql"] = f"error: {str(e).strip()}"
        try:
            REDIS.ping()
            checks["redis"] = "ok"
        except Exception as e:  # noqa: BLE001
            checks["redis"] = f"error: {e}"
        ok = all(v == "ok" for v in checks.values())
        self.send_json(200 if ok else 503, {"status": "ok" if ok else "unavailable", **checks})

    def index(self):
        try:
            visits = REDIS.incr("clientstack:visits")
            conn = pg_connect()
            try:
                with conn, conn.cursor() as cur:
                    migrations = applied_migrations(cur)
                    versions = {m["version"] for m in migrations}
                    site = {}
                    if "001" in versions:
                        cur.execute("INSERT INTO site (name) VALUES (%s) ON CONFLICT DO NOTHING", (SITE_NAME,))
                        if "002" in versions:
                            cur.execute("UPDATE site SET last_seen = now() WHERE name = %s", (SITE_NAME,))
                            cur.execute("SELECT first_seen, last_seen FROM site WHERE name = %s", (SITE_NAME,))
                            first, last = cur.fetchone()
                            site = {"first_seen": iso(first), "last_seen": iso(last)}
                        else:
                            cur.execute("SELECT first_seen FROM site WHERE name = %s", (SITE_NAME,))
                            site = {"first_seen": iso(cur.fetchone()[0])}
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001
            log(f"GET / failed: {e}")
            self.send_json(503, {"error": str(e).strip(), "version": VERSION})
            return
        self.send_json(200, {
            "version": VERSION,
            "site": SITE_NAME,
            "visits": visits,
            "site_row": site,
            "migrations": migrations,
        })

    def log_message(self, fmt, *args):
        if self.path != "/health":  # the health check runs every few seconds: keep logs quiet
            log(self.address_string(), fmt % args)


def serve():
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True

    # As PID 1, Python ignores SIGTERM unless told otherwise: docker stop would wait 10 s.
    def stop(signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    log(f"version {VERSION}, site {SITE_NAME!r}, listening on :{PORT}")
    try:
        server.serve_forever()
    finally:
        server.server_close()
        log("stopped")


# --------------------------------------------------------------------------------------------
# migrate
# --------------------------------------------------------------------------------------------
def connect_with_retry(deadline_s=60):
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return pg_connect()
        except psycopg2.OperationalError as e:
            if time.monotonic() > deadline:
                raise
            log(f"migrate: database not ready ({str(e).strip()}), retrying")
            time.sleep(2)


def migrate():
    files = []
    for name in sorted(os.listdir(MIGRATIONS_DIR)):
        m = MIGRATION_FILE.match(name)
        if m:
            files.append((m.group(1), name))
        elif not name.startswith("."):
            log(f"migrate: ignoring {name} (not NNN_name.sql)")
    known = [v for v, _ in files]
    if len(set(known)) != len(known):
        log(f"migrate: error: two files share a version number in {MIGRATIONS_DIR}")
        return 1

    conn = connect_with_retry()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_ID,))
        cur.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in cur.fetchall()}
    conn.autocommit = False

    for extra in sorted(done - set(known)):
        log(f"migrate: warning: the database has migration {extra}, which this image ({VERSION}) does not ship")

    applied = 0
    for version, name in files:
        if version in done:
            log(f"migrate: {name}: already applied")
            continue
        with open(os.path.join(MIGRATIONS_DIR, name), encoding="utf-8") as f:
            sql = f.read()
        started = time.monotonic()
        try:
            with conn, conn.cursor() as cur:  # one transaction: the file and its record, or nothing
                cur.execute(sql)
                cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
        except psycopg2.Error as e:
            log(f"migrate: {name}: FAILED, rolled back: {str(e).strip()}")
            return 1
        applied += 1
        log(f"migrate: {name}: applied ({(time.monotonic() - started) * 1000:.0f} ms)")
    conn.close()
    log(f"migrate: done, {applied} applied, {len(files) - applied} already there (api {VERSION})")
    return 0


# --------------------------------------------------------------------------------------------
# healthcheck
# --------------------------------------------------------------------------------------------
def healthcheck():
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=4) as r:
            print(r.read().decode().strip())
            return 0
    except urllib.error.HTTPError as e:
        print(e.read().decode().strip())
    except Exception as e:  # noqa: BLE001
        print(f"health: {e}")
    return 1


def main(argv):
    cmd = argv[1] if len(argv) > 1 else "serve"
    if cmd == "serve":
        serve()
        return 0
    if cmd == "migrate":
        return migrate()
    if cmd == "healthcheck":
        return healthcheck()
    print(f"usage: api [serve|migrate|healthcheck] (got {cmd!r})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
