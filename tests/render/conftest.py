"""Fixtures for tests/render. The helpers live in render_testlib.py (a unique module name, so
`import` from the tests cannot collide with another conftest); its fixtures are registered here."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from render_testlib import cluster, images, nginx_user, public_tmp, tls_cert  # noqa: E402,F401
