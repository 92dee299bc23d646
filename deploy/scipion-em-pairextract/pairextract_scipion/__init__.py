"""Scipion plugin for pairextract: tilt-pair particle extraction (Xmipp's *Extract Particle
Pairs*) run by pairextract from its own environment, as scipion-em-relion runs RELION."""

import os
import shlex
import shutil
import sys

import pwem
import pyworkflow.utils as pwutils

from .constants import PAIREXTRACT_ENV_ACTIVATION, PAIREXTRACT_HOME, PAIREXTRACT_PROGRAM

__version__ = "0.1.0"
_logo = ""
_references = []


class Plugin(pwem.Plugin):
    """Where pairextract is: ``PAIREXTRACT_PROGRAM``, else ``PAIREXTRACT_HOME/bin/pairextract``,
    else ``pairextract`` on the PATH; ``PAIREXTRACT_ENV_ACTIVATION`` runs first when set."""

    _homeVar = PAIREXTRACT_HOME
    _url = ""  # no public home page yet; see the plugin's README.md

    @classmethod
    def _defineVariables(cls):
        cls._defineVar(PAIREXTRACT_HOME, "")
        cls._defineVar(PAIREXTRACT_ENV_ACTIVATION, "")
        cls._defineVar(PAIREXTRACT_PROGRAM, "")

    @classmethod
    def getActivation(cls):
        """The activation command followed by ``&&``, or an empty string."""
        activation = (cls.getVar(PAIREXTRACT_ENV_ACTIVATION) or "").strip()
        return f"{activation} && " if activation else ""

    @classmethod
    def getCommand(cls, program):
        """Shell command running ``program`` from pairextract's environment (``python3``,
        ``pairextract``): from ``PAIREXTRACT_HOME/bin`` when set, else from the PATH."""
        home = cls.getVar(PAIREXTRACT_HOME)
        path = os.path.join(home, "bin", program) if home else program
        return cls.getActivation() + shlex.quote(path)

    @classmethod
    def getProgram(cls):
        """Shell command running the ``pairextract`` command line."""
        explicit = (cls.getVar(PAIREXTRACT_PROGRAM) or "").strip()
        if explicit:
            return cls.getActivation() + explicit
        return cls.getCommand("pairextract")

    @classmethod
    def getEnviron(cls):
        """Scipion's environment without what would make pairextract's Python load Scipion's
        packages: PYTHONHOME, and PYTHONPATH entries inside Scipion's own environment
        (Scipion pins numpy/scipy/mrcfile versions pairextract cannot use)."""
        environ = pwutils.Environ(os.environ)
        environ.pop("PYTHONHOME", None)
        prefix = os.path.realpath(sys.prefix)
        keep = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep)
                if p and not os.path.realpath(p).startswith(prefix + os.sep)]
        if keep:
            environ["PYTHONPATH"] = os.pathsep.join(keep)
        else:
            environ.pop("PYTHONPATH", None)
        return environ

    @classmethod
    def validateInstallation(cls):
        """Errors when the configured pairextract cannot be where it is said to be."""
        home = cls.getVar(PAIREXTRACT_HOME)
        explicit = (cls.getVar(PAIREXTRACT_PROGRAM) or "").strip()
        if explicit or cls.getActivation():
            return []  # a command line or an activation: only running it tells
        if home:
            program = os.path.join(home, "bin", "pairextract")
            if not os.path.exists(program):
                return [f"{PAIREXTRACT_HOME} = {home}, but {program} does not exist. Set "
                        f"{PAIREXTRACT_HOME} to the environment where pairextract is "
                        f"installed, or {PAIREXTRACT_PROGRAM} to its executable."]
            return []
        if shutil.which("pairextract") is None:
            return [f"pairextract was not found on the PATH. Install it in its own "
                    f"environment and set {PAIREXTRACT_HOME} (that environment's folder), "
                    f"{PAIREXTRACT_ENV_ACTIVATION} (a command activating it) or "
                    f"{PAIREXTRACT_PROGRAM} (the executable) in Scipion's config."]
        return []

    @classmethod
    def defineBinaries(cls, env):
        # pairextract is installed by the user in an environment of its own (README.md);
        # Scipion's installer has nothing to fetch.
        pass
