"""The sample project as a real cluster: three web instances and a Celery
worker on their own database, with Redis and RabbitMQ.

This is what a user of the sample project sees: a schema change made through
one instance's page reaches the others' memory, a task started on one
instance is cancelled from another, and the admin dashboard lists all four
processes (also checked in a real browser).
"""

import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from sampleproject.cluster import ROOT, Cluster, commands, create_postgres_database
from tests.support.http import Client, wait_until
from tests.support.servers import free_port

ARTIFACTS = ROOT / "artifacts"


def sample_database_url(tmp_path):
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine.endswith("postgresql"):
        sd = settings.DATABASES["default"]
        name = f"nocoplugins_sample_{uuid.uuid4().hex[:8]}"
        user = sd.get("USER") or "postgres"
        host = sd.get("HOST") or "127.0.0.1"
        url = f"postgres://{user}@{host}:{sd.get('PORT') or 5432}/{name}"
        return url, name
    return f"sqlite:///{tmp_path / 'sample.sqlite3'}", None


def drop_postgres_database(url, name):
    import psycopg

    admin = url.rsplit("/", 1)[0].replace("postgres://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def sample_cluster(tmp_path_factory, redis_url, amqp_url):
    tmp_path = tmp_path_factory.mktemp("sample-cluster")
    database_url, pg_name = sample_database_url(tmp_path)
    ports = [free_port() for _ in range(3)]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "sampleproject.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": amqp_url,
        "COORDINATION_APP_NAME": f"sample-{uuid.uuid4().hex[:8]}",
        "COORDINATION_HEARTBEAT": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("PYTHONPATH", None)
    log = io.StringIO()
    cluster = Cluster(env, commands(ports=ports), out=log)
    if pg_name:
        create_postgres_database(database_url)
    try:
        cluster.prepare()
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "shell",
                "-c",
                "from django.contrib.auth.models import User; "
                "User.objects.create_superuser('admin', 'a@example.com', 'admin')",
            ],
            env=env,
            cwd=ROOT,
            check=True,
        )
        cluster.start()
        clients = [Client(f"http://127.0.0.1:{port}") for port in ports]
        for client in clients:
            wait_until(
                lambda c=client: c.get("/datasource/schema.json"),
                timeout=60,
                message=f"{client.base} to serve",
            )
        yield clients
    finally:
        cluster.stop()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "sample-cluster.log").write_text(log.getvalue())
        if pg_name:
            drop_postgres_database(database_url, pg_name)


def schema(client):
    return client.get("/datasource/schema.json")["schema"]


def test_instances_are_distinct_processes(sample_cluster):
    ids = {
        client.get("/datasource/schema.json")["instance"] for client in sample_cluster
    }
    assert len(ids) == 3


def test_a_field_deleted_on_one_instance_leaves_every_instances_memory(sample_cluster):
    web1, web2, web3 = sample_cluster
    for field in ("title", "isbn"):
        web1.post("/datasource/fields/add", {"collection": "books", "name": field})
    for client in sample_cluster:
        wait_until(
            lambda c=client: schema(c).get("books", {}).keys() >= {"title", "isbn"},
            message=f"{client.base} to learn the new fields",
        )

    assert web2.post(
        "/datasource/fields/delete", {"collection": "books", "name": "isbn"}
    ) == {"deleted": True}
    for client in (web1, web3):
        wait_until(
            lambda c=client: "isbn" not in schema(c)["books"],
            message=f"{client.base} to drop isbn from memory",
        )
    assert schema(web1)["books"] == {"title": "string"}


def test_a_task_started_on_one_instance_is_cancelled_from_another(sample_cluster):
    web1, web2, web3 = sample_cluster
    task = web1.post(
        "/tasks/start",
        {
            "title": "long",
            "steps": 200,
            "step_seconds": 0.1,
        },
    )
    running = wait_until(
        lambda: (
            (s := web2.get(f"/tasks/{task['id']}.json"))["status"] == "running"
            and s["progress"] > 0
            and s
        ),
        timeout=60,
        message="the task to run",
    )
    web3.post(f"/tasks/{task['id']}/cancel", {})
    done = wait_until(
        lambda: (
            (s := web1.get(f"/tasks/{task['id']}.json"))["status"] == "cancelled" and s
        ),
        timeout=30,
        message="the task to be cancelled",
    )
    assert done["progress"] < done["steps"]
    assert running["instance"]


def test_dashboard_lists_all_four_instances(sample_cluster):
    web2 = sample_cluster[1]
    web2.login("admin", "admin")
    data = wait_until(
        lambda: (
            (d := web2.get("/admin/nocoplugins/clusterdashboard/data.json"))
            and len(d["instances"]) >= 4
            and d
        ),
        timeout=30,
        message="four live instances on the dashboard",
    )
    kinds = sorted(i["kind"] for i in data["instances"])
    assert kinds.count("web") == 3 and "worker" in kinds, kinds
    assert {p["name"] for p in data["plugins"]} >= {"datasource", "asynctasks"}


def test_dashboard_in_a_real_browser(sample_cluster):
    chromium = Path("/usr/bin/chromium")
    driver_path = Path("/usr/bin/chromedriver")
    if not chromium.exists() or not driver_path.exists():
        from tests.support.servers import require

        require(
            "Chromium",
            str(chromium),
            "install the chromium and chromium-driver packages (.ci/run does)",
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1100",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        base = sample_cluster[0].base
        browser.get(base + "/admin/login/?next=/admin/nocoplugins/clusterdashboard/")
        browser.find_element(By.NAME, "username").send_keys("admin")
        browser.find_element(By.NAME, "password").send_keys("admin")
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        wait = WebDriverWait(browser, 30)
        wait.until(
            lambda b: len(b.find_elements(By.CSS_SELECTOR, "#instances tr code")) >= 4
        )
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#events-chart rect.bar"))
        assert "Cluster dashboard" in browser.title
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
    finally:
        browser.quit()
