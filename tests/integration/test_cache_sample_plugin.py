"""The sample project's notes plugin caches a database read (real processes).

Runs ``manage.py`` of the sample project on a fresh SQLite file, once on the
embedded default (locmem) and once with REDIS_URL (the Redis store).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import json
from django.db import connection
from django.test.utils import CaptureQueriesContext
from nocoplugins import app
from sampleproject.notes.models import Note

plugin = app.plugin_manager.get("notes")
plugin.cache.reset()
Note.objects.create(text="first")
counts = []
for _ in range(3):
    with CaptureQueriesContext(connection) as queries:
        texts = plugin.latest_notes()
    counts.append(len(queries))
print("@@" + json.dumps({"store": plugin.cache.store, "texts": texts,
                         "queries": counts,
                         "cached": app.cache_manager.get_cache("notes").get("latest")}))
plugin.cache.reset()
"""


def manage(*args, env):
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_notes_plugin_creates_its_cache_in_load_and_wraps_a_query(
    store, tmp_path, request
):
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'sample.sqlite3'}"
    env["COORDINATION_APP_NAME"] = "sample-test"
    if store == "redis":
        env["REDIS_URL"] = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")
    manage("migrate", "--skip-checks", "-v", "0", env=env)
    out = manage("shell", "-c", SCRIPT, env=env)
    (line,) = [ln for ln in out.splitlines() if ln.startswith("@@")]
    seen = json.loads(line[2:])
    assert seen["store"] == store
    assert seen["texts"][0] == "first"
    assert seen["cached"] == seen["texts"]
    # The first call reads the database; the next ones come from the cache.
    assert seen["queries"][0] >= 1 and seen["queries"][1:] == [0, 0]
