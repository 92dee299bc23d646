"""Names shared by the plugin's modules."""

# Configuration variables (environment or Scipion's config file, like every Scipion plugin).
# Folder of pairextract's own environment (a venv or conda env): bin/pairextract is run.
PAIREXTRACT_HOME = "PAIREXTRACT_HOME"
# Shell command that activates pairextract's environment, e.g. "conda activate pairextract"
# or "source /opt/pairextract/bin/activate"; run before each pairextract command.
PAIREXTRACT_ENV_ACTIVATION = "PAIREXTRACT_ENV_ACTIVATION"
# The pairextract executable itself, when neither of the above says where it is.
PAIREXTRACT_PROGRAM = "PAIREXTRACT_PROGRAM"

# Micrographs source (values of the protocol's downsampleType, as Xmipp's protocol).
SAME_AS_PICKING = 0
OTHER = 1

# Normalization types, in the form's order.
NORM_TYPES = ("OldXmipp", "NewXmipp", "Ramp")

# Where the work runs.
CLUSTER_LOCAL = 0
CLUSTER_SLURM = 1
CLUSTER_ADDRESS = 2
