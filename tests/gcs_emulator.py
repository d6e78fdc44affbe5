"""A Google Cloud Storage emulator on localhost, for the tests of gs:// paths.

`gcp-storage-emulator` (PyPI) serves the GCS JSON API in memory (with the generation headers
and preconditions TensorStore needs: gcs_emulator_server.py). `start()` runs it in a
subprocess on a free port and points every client fgjax uses at it, through the environment
(inherited by the tests' training subprocesses):
- gcsfs (etils.epath's gs:// backend, fgjax.storage): STORAGE_EMULATOR_HOST;
- TensorStore (Orbax's array writer): TENSORSTORE_GCS_HTTP_URL, with a fixed test token
  (GOOGLE_AUTH_TOKEN_FOR_TESTING), since no Google credentials exist here.
Nothing leaves localhost.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

BUCKET = "fgjax-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _wait_until_listening(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the GCS emulator exited with status {proc.returncode}")
        try:
            socket.create_connection(("localhost", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the GCS emulator did not listen on port {port} within {timeout} s")


@contextlib.contextmanager
def start() -> Iterator[str]:
    """Runs the emulator with one bucket; yields "gs://<bucket>". The environment variables
    are set for this process and its children while it runs."""
    port = _free_port()
    log = tempfile.NamedTemporaryFile(prefix="gcs-emulator-", suffix=".log", delete=False)
    server = os.path.join(os.path.dirname(__file__), "gcs_emulator_server.py")
    command = [sys.executable, server, f"--port={port}", f"--bucket={BUCKET}"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    variables = {
        "STORAGE_EMULATOR_HOST": url,
        "TENSORSTORE_GCS_HTTP_URL": url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
        "GOOGLE_CLOUD_PROJECT": "fgjax-test",
        # gcsfs's default class first asks the Storage Control API (gRPC) whether a bucket is
        # zonal, which the emulator does not serve; it would fall back, with a warning each time
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }
    saved = {k: os.environ.get(k) for k in variables}
    try:
        _wait_until_listening(port, proc)
        os.environ.update(variables)
        yield f"gs://{BUCKET}"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
