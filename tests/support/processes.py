"""Run real Django processes for cluster tests.

``spawn("tests.cluster.nodes:counter", arg1, arg2)`` starts a new Python
process that sets Django up with the test settings, on the test database,
and calls ``counter(arg1, arg2)``. Arguments travel as JSON on the command
line; whatever the function returns is printed as JSON on the last line of
stdout, read back by :func:`result`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
RESULT_MARK = "@@result "


def database_url():
    """A DATABASE_URL for the database the tests run on (the test DB)."""
    sd = connection.settings_dict
    if sd["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{sd['NAME']}"
    if sd["ENGINE"].endswith("postgresql"):
        user = sd.get("USER") or "postgres"
        password = f":{sd['PASSWORD']}" if sd.get("PASSWORD") else ""
        host = sd.get("HOST") or "127.0.0.1"
        port = sd.get("PORT") or 5432
        return f"postgres://{user}{password}@{host}:{port}/{sd['NAME']}"
    raise NotImplementedError(f"no URL for {sd['ENGINE']}")


def announce(path, text):
    """Write ``text`` to ``path`` so a reader polling for the file never sees
    it empty or half written (the writer may be stopped or killed right
    after): write a temporary file beside it, then rename it into place."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)


def child_env(**extra):
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = os.environ.get(
        "DJANGO_SETTINGS_MODULE", "tests.settings"
    )
    env["DATABASE_URL"] = database_url()
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), env.get("PYTHONPATH")])
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def spawn(target, *args, env=None, **popen):
    """Start ``target`` ("module:function") in a new Django process."""
    cmd = [sys.executable, "-m", "tests.support.child", target,
           json.dumps(list(args))]
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(cmd, env=env or child_env(), cwd=ROOT, text=True,
                            **popen)


def result(process, timeout=120):
    """Wait for a spawned process and return what its function returned."""
    out, err = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise AssertionError(
            f"child exited with {process.returncode}\nstdout:\n{out}\n"
            f"stderr:\n{err}"
        )
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise AssertionError(f"child printed no result\nstdout:\n{out}\nstderr:\n{err}")


def run(target, *args, env=None, timeout=120):
    return result(spawn(target, *args, env=env), timeout=timeout)
