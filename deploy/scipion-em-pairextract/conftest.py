"""Headless Scipion for pytest: a throw-away SCIPION_HOME / user-data folder.

pyworkflow reads its configuration from the environment when it is first imported, so this
runs before the tests import it. A real Scipion (``scipion3 tests ...``) sets these itself and
is left alone.
"""

import os
import shutil
import sys
import tempfile

if "SCIPION_HOME" not in os.environ:
    _root = tempfile.mkdtemp(prefix="scipion-pairextract-tests-")
    os.environ["SCIPION_HOME"] = _root
    os.environ["SCIPION_USER_DATA"] = os.path.join(_root, "ScipionUserData")
    os.makedirs(os.path.join(_root, "config"))
    _OWN_ROOT = _root
else:
    _OWN_ROOT = None
os.environ.setdefault("SCIPION_DOMAIN", "pwem")  # set by the scipion launcher
os.environ.setdefault("SCIPION_PYTHON", sys.executable)  # runs each protocol's process
os.environ.setdefault("SCIPION_NOTIFY", "False")  # no usage report over the network
os.environ.setdefault("SCIPION_TEST_NOSYNC", "True")  # no test-data download

import pyworkflow as pw  # noqa: E402  (after the environment above)

if not os.path.exists(pw.Config.SCIPION_HOSTS):
    from pyworkflow.protocol import HostConfig

    HostConfig.writeBasic(pw.Config.SCIPION_HOSTS)


def pytest_sessionfinish(session, exitstatus):
    """Remove the folder made above (projects, synthetic data) unless asked to keep it."""
    if _OWN_ROOT and not os.environ.get("PAIREXTRACT_SCIPION_KEEP"):
        shutil.rmtree(_OWN_ROOT, ignore_errors=True)
    elif _OWN_ROOT:
        print(f"\nScipion test projects kept in {_OWN_ROOT}")
