"""How the plugin finds and runs pairextract (no project needed)."""

import os
import sys

import pwem
import pytest

from pairextract_scipion import Plugin
from pairextract_scipion.constants import (
    PAIREXTRACT_ENV_ACTIVATION,
    PAIREXTRACT_HOME,
    PAIREXTRACT_PROGRAM,
)

pwem.Domain.getPlugins()  # registers the plugin: its variables are read from the environment


@pytest.fixture
def config(monkeypatch):
    """Set the plugin's variables for one test (they are class-level, read at registration)."""
    def set_vars(home="", activation="", program=""):
        monkeypatch.setitem(Plugin._vars, PAIREXTRACT_HOME, home)
        monkeypatch.setitem(Plugin._vars, PAIREXTRACT_ENV_ACTIVATION, activation)
        monkeypatch.setitem(Plugin._vars, PAIREXTRACT_PROGRAM, program)
    return set_vars


def test_program_from_home_activation_or_explicit(config, tmp_path):
    config(home=str(tmp_path / "pe env"))
    assert Plugin.getProgram() == f"'{tmp_path}/pe env/bin/pairextract'"
    assert Plugin.getCommand("python3") == f"'{tmp_path}/pe env/bin/python3'"
    config(activation="conda activate pairextract")
    assert Plugin.getProgram() == "conda activate pairextract && pairextract"
    config(activation="source /opt/pe/bin/activate", program="python3 -m pairextract")
    assert Plugin.getProgram() == "source /opt/pe/bin/activate && python3 -m pairextract"


def test_installation_errors_name_the_variable(config, tmp_path):
    config(home=str(tmp_path))
    errors = Plugin.validateInstallation()
    assert len(errors) == 1 and PAIREXTRACT_HOME in errors[0]
    assert str(tmp_path / "bin" / "pairextract") in errors[0]
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "pairextract").write_text("#!/bin/sh\n")
    assert Plugin.validateInstallation() == []


def test_environ_keeps_scipion_python_out(monkeypatch):
    inside = os.path.join(sys.prefix, "lib", "site-packages")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([inside, "/opt/mine"]))
    monkeypatch.setenv("PYTHONHOME", sys.prefix)
    env = Plugin.getEnviron()
    assert env["PYTHONPATH"] == "/opt/mine"
    assert "PYTHONHOME" not in env
    monkeypatch.setenv("PYTHONPATH", inside)
    assert "PYTHONPATH" not in Plugin.getEnviron()


def test_protocol_reports_a_missing_pairextract(config, tmp_path):
    # As the GUI finds it: through the domain, which ties the class to its plugin.
    prot_class = pwem.Domain.getProtocols()["ProtPairextractExtractPairs"]
    config(home=str(tmp_path))
    errors = prot_class.validateInstallation()
    assert errors and PAIREXTRACT_HOME in errors[0]
