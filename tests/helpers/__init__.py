"""Shared test helpers: the OMMX 3 side-venv driver and a loopback OCI registry.

Import them as ``from helpers.ommx3 import Ommx3Driver`` and
``from helpers.oci_registry import OciRegistry`` (``helpers.credentials`` clears ambient
registry credentials for the auth and remote tests; ``tests/`` is on ``sys.path``
via ``tests/conftest.py``); the fixtures in ``conftest.py`` are the usual entry point.
"""
