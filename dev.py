#!/usr/bin/env python3
"""Set up and run the project from a fresh clone.

    python3 dev.py demo    # sample project on SQLite, http://127.0.0.1:8000/
    python3 dev.py test    # the test suite (extra arguments go to pytest)
    python3 dev.py cluster # 3 web instances + a Celery worker on PostgreSQL,
                           # Redis and RabbitMQ (see docs/operating.md)

Runs with any Python 3; it finds a Python 3.12 or newer (``$PYTHON``, the
running one, ``python3.13``/``python3.12`` on PATH, or pyenv's), creates
``.venv`` with it and installs requirements.txt there when that file changes.
"""

import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PYTHON = VENV / "bin" / "python"
STAMP = VENV / ".requirements.sha256"
DEMO_USER, DEMO_PASSWORD = "admin", "admin"


def say(message):
    print(f"[dev] {message}", flush=True)


def version_of(python):
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True, text=True, timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    major, minor = map(int, out.stdout.split())
    return major, minor


def find_python():
    candidates = [os.environ.get("PYTHON"), sys.executable]
    candidates += [shutil.which(n) for n in ("python3.13", "python3.12", "python3")]
    pyenv = os.path.expanduser("~/.pyenv/versions")
    candidates += sorted(glob.glob(f"{pyenv}/3.1[2-9]*/bin/python3"), reverse=True)
    for python in filter(None, candidates):
        version = version_of(python)
        if version and version >= (3, 12):
            return python
    sys.exit(
        "dev.py needs Python 3.12 or newer. Install it, or point PYTHON at it: "
        "PYTHON=/path/to/python3.12 python3 dev.py ..."
    )


def ensure_venv():
    if VENV_PYTHON.exists() and (version_of(str(VENV_PYTHON)) or (0, 0)) < (3, 12):
        say("removing .venv: it was made with a Python older than 3.12")
        shutil.rmtree(VENV)
    if not VENV_PYTHON.exists():
        python = find_python()
        say(f"creating .venv with {python}")
        subprocess.run([python, "-m", "venv", str(VENV)], check=True)
    wanted = hashlib.sha256((ROOT / "requirements.txt").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != wanted:
        say("installing requirements.txt into .venv")
        pip = [str(VENV_PYTHON), "-m", "pip", "install", "--disable-pip-version-check"]
        subprocess.run(pip + ["-q", "--upgrade", "pip"], check=True)
        subprocess.run(pip + ["-q", "-r", str(ROOT / "requirements.txt")], check=True)
        STAMP.write_text(wanted)


def manage(*args, env=None):
    return subprocess.run(
        [str(VENV_PYTHON), str(ROOT / "manage.py"), *args], cwd=ROOT, env=env
    )


def demo(args):
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="sampleproject.settings")
    if manage("migrate", "--noinput", env=env).returncode:
        sys.exit("migrate failed; see above")
    create_user = (
        "from django.contrib.auth import get_user_model; U = get_user_model(); "
        f"U.objects.filter(username={DEMO_USER!r}).exists() or "
        f"U.objects.create_superuser({DEMO_USER!r}, 'admin@example.com', "
        f"{DEMO_PASSWORD!r})"
    )
    manage("shell", "-c", create_user, env=env)
    address = args[0] if args else "127.0.0.1:8000"
    say(f"demo admin login: http://{address}/admin/  user {DEMO_USER!r}, "
        f"password {DEMO_PASSWORD!r}")
    sys.exit(manage("runserver", address, env=env).returncode)


def test(args):
    cmd = [str(VENV_PYTHON), "-m", "pytest", *args]
    sys.exit(subprocess.run(cmd, cwd=ROOT).returncode)


def cluster(args):
    cmd = [str(VENV_PYTHON), "-m", "sampleproject.cluster", *args]
    try:
        sys.exit(subprocess.run(cmd, cwd=ROOT).returncode)
    except KeyboardInterrupt:
        sys.exit(130)


def main():
    commands = {"demo": demo, "test": test, "cluster": cluster}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    ensure_venv()
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
