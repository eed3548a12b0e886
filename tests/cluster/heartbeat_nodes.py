import time

from nocoplugins import app


def beat_for(seconds):
    app.start()
    time.sleep(seconds)
    return app.instance_id
