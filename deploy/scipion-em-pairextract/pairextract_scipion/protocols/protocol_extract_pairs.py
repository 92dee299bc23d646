"""The protocol: Xmipp's *Extract Particle Pairs* form, run by pairextract."""

import os
import shlex
import signal
import subprocess
import time

import pyworkflow.protocol.params as params
import pyworkflow.utils as pwutils
from pwem.objects import (
    Particle,
    ParticlesTiltPair,
    SetOfAngles,
    SetOfCoordinates,
    SetOfCTF,
    SetOfMicrographs,
    TiltPair,
)
from pwem.protocols import ProtExtractParticlesPair
from pyworkflow.object import Set
from pyworkflow.protocol.constants import LEVEL_ADVANCED

from .. import Plugin, convert
from ..constants import (
    CLUSTER_ADDRESS,
    CLUSTER_LOCAL,
    CLUSTER_SLURM,
    NORM_TYPES,
    OTHER,
    SAME_AS_PICKING,
)


class PairextractError(Exception):
    """pairextract refused or failed; the message is its own one-paragraph explanation."""


class ProtPairextractExtractPairs(ProtExtractParticlesPair):
    """Extract particle pairs from untilted/tilted micrograph pairs with pairextract.

    The same form, defaults and output as Xmipp's *extract particle pairs*: a
    ParticlesTiltPair whose untilted and tilted particles share the ids of the input
    coordinate pairs, kept only where both boxes were extracted. pairextract reproduces
    Xmipp's programs (downsampling, dust removal, phase flip, inversion, box cutting,
    normalization) on a Dask cluster (this computer, SLURM, or a running scheduler), checks
    every pair against the fitted tilt geometry, reports each dropped pair with its reason,
    and on *Continue* reuses the micrographs already extracted.

    The particles are written as MRC stacks (extra/xmipp/untilted.mrcs, tilted.mrcs) that
    Xmipp, RELION and Scipion read; pairextract's own output (Zarr store and Parquet tables,
    among them dropped.parquet) is in extra/pairextract.

    Streaming: when the input coordinates are still being written (their sets' stream state
    open), the extraction is ``pairextract watch`` following the input until it is closed, and
    the output is published in streaming (open, growing as micrograph pairs are committed,
    its stacks in extra/xmipp/part-NNN), then closed.
    """

    _label = "extract particle pairs (pairextract)"
    _possibleOutputs = {"outputParticlesTiltPair": ParticlesTiltPair}

    # --------------------------- DEFINE param functions ----------------------------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputCoordinatesTiltedPairs", params.PointerParam,
                      important=True, label="Coordinates tilted pairs",
                      pointerClass="CoordinatesTiltPair",
                      help="The untilted and tilted coordinates, paired by id.")
        form.addParam("downsampleType", params.EnumParam,
                      choices=["same as picking", "other"], default=SAME_AS_PICKING,
                      important=True, label="Micrographs source",
                      display=params.EnumParam.DISPLAY_HLIST,
                      help="_same as picking_: extract from the micrographs the coordinates "
                           "were picked on.\n_other_: extract from another pair of micrograph "
                           "sets, matched to the picking micrographs by micName (without "
                           "extension); coordinates are rescaled by the ratio of pixel sizes.")
        form.addParam("inputMicrographsTiltedPair", params.PointerParam,
                      pointerClass="MicrographsTiltPair",
                      condition=f"downsampleType != {SAME_AS_PICKING}",
                      important=True, label="Input tilt pair micrographs",
                      help="The tilt pair micrographs to extract from.")
        form.addParam("ctfUntilt", params.PointerParam, allowsNull=True,
                      pointerClass="SetOfCTF",
                      label="CTF estimation (untilted mics)",
                      help="CTFs of the UNTILTED micrographs: needed to phase flip them, and "
                           "carried to the untilted particles.")
        form.addParam("ctfTilt", params.PointerParam, allowsNull=True,
                      pointerClass="SetOfCTF",
                      label="CTF estimation (tilted mics)",
                      help="CTFs of the TILTED micrographs: needed to phase flip them, and "
                           "carried to the tilted particles.")
        form.addParam("downFactor", params.FloatParam, default=1.0,
                      validators=[params.GE(1.0, error="Value should be greater or equal "
                                                       "than 1.0")],
                      label="Downsampling factor",
                      help="Fourier-downsample the micrographs by this factor before "
                           "extraction (1.0: none; non-integer factors are allowed).")
        form.addParam("boxSize", params.IntParam, default=0,
                      label="Particle box size", validators=[params.Positive],
                      help="In pixels of the output particles, i.e. after downsampling.")
        form.addParam("doBorders", params.BooleanParam, default=False,
                      label="Fill pixels outside borders",
                      help="By default a particle whose box leaves the micrograph is skipped "
                           "(and so is its pair). With this option such boxes are kept, the "
                           "pixels outside filled with the nearest edge pixel.")

        form.addSection(label="Preprocess")
        form.addParam("doRemoveDust", params.BooleanParam, default=True,
                      important=True, label="Dust removal (Recommended)",
                      help="Replace pixels further than the threshold (in standard "
                           "deviations of the micrograph) from its mean, as Xmipp's "
                           "bad-pixel filter does.")
        form.addParam("thresholdDust", params.FloatParam, default=3.5,
                      condition="doRemoveDust", expertLevel=LEVEL_ADVANCED,
                      label="Threshold for dust removal",
                      help="In standard deviations of the micrograph. 3.5 suits cryo data; "
                           "high-contrast negative stain may need more.")
        form.addParam("doInvert", params.BooleanParam, default=None,
                      label="Invert contrast",
                      help="Invert the contrast if your particles are black over a white "
                           "background (Xmipp, Spider, RELION and EMAN expect white "
                           "particles).")
        form.addParam("doFlip", params.BooleanParam, default=False,
                      label="Phase flipping",
                      help="Flip the phases of each micrograph where its CTF is negative. "
                           "Needs a CTF estimation for the views to flip.")
        form.addParam("tiltAwareFlip", params.BooleanParam, default=False,
                      condition="doFlip", expertLevel=LEVEL_ADVANCED,
                      label="Tilt-aware phase flip",
                      help="Not in Xmipp. Flip each tilted particle with its own defocus, which "
                           "changes across a tilted specimen with the distance from the tilt "
                           "axis, using the pair's tilt angle and tilted axis (given, else "
                           "fitted from the coordinates); untilted micrographs are flat. "
                           "Off: the whole micrograph with one defocus, as Xmipp.")
        form.addParam("tiltSign", params.EnumParam, choices=["+1", "-1"], default=0,
                      condition="doFlip and tiltAwareFlip", expertLevel=LEVEL_ADVANCED,
                      display=params.EnumParam.DISPLAY_HLIST, label="Tilt sign",
                      help="Which side of the tilt axis is farther from the objective: the "
                           "coordinates cannot tell; check with a few particles or your "
                           "microscope's convention.")
        form.addParam("doNormalize", params.BooleanParam, default=True,
                      label="Normalize (Recommended)",
                      help="Background to zero mean and unit standard deviation.")
        form.addParam("normType", params.EnumParam, choices=list(NORM_TYPES), default=2,
                      condition="doNormalize", expertLevel=LEVEL_ADVANCED,
                      display=params.EnumParam.DISPLAY_COMBO,
                      label="Normalization type",
                      help="OldXmipp: whole image to mean 0, std 1.\n"
                           "NewXmipp: background to mean 0, std 1.\n"
                           "Ramp: subtract a fitted background plane, then NewXmipp.")
        form.addParam("backRadius", params.IntParam, default=-1,
                      condition="doNormalize",
                      label="Background radius", expertLevel=LEVEL_ADVANCED,
                      help="Pixels outside this circle (radius in output pixels) are the "
                           "background. A value <= 0 means half the box size.")

        form.addSection(label="pairextract")
        form.addParam("clusterType", params.EnumParam,
                      choices=["local", "SLURM", "scheduler address"], default=CLUSTER_LOCAL,
                      display=params.EnumParam.DISPLAY_HLIST, label="Run on",
                      help="_local_: Dask worker processes on this computer.\n"
                           "_SLURM_: Dask workers started as SLURM jobs through dask-jobqueue "
                           "(queue, account, memory from dask-jobqueue's jobqueue.yaml).\n"
                           "_scheduler address_: a Dask scheduler that is already running.")
        form.addParam("workers", params.IntParam, default=2,
                      condition=f"clusterType != {CLUSTER_ADDRESS}",
                      validators=[params.Positive], label="Workers",
                      help="local: worker processes (one core each). SLURM: worker "
                           "processes to request.")
        form.addParam("slurmJobs", params.IntParam, default=1,
                      condition=f"clusterType == {CLUSTER_SLURM}",
                      validators=[params.Positive], label="SLURM jobs",
                      help="Batch jobs that run the workers.")
        form.addParam("jobqueueConfig", params.PathParam, default="",
                      condition=f"clusterType == {CLUSTER_SLURM}",
                      expertLevel=LEVEL_ADVANCED, label="jobqueue.yaml",
                      help="A dask-jobqueue configuration used on top of "
                           "~/.config/dask/jobqueue.yaml (optional).")
        form.addParam("schedulerAddress", params.StringParam, default="",
                      condition=f"clusterType == {CLUSTER_ADDRESS}",
                      label="Scheduler address or file",
                      help="tcp://host:8786, or a scheduler file written by "
                           "`dask scheduler --scheduler-file`.")
        form.addParam("useFloat16", params.BooleanParam, default=False,
                      expertLevel=LEVEL_ADVANCED, label="Store particles as float16",
                      help="Halves pairextract's own store (extra/pairextract); the stacks "
                           "registered in Scipion are float32 either way.")
        form.addParam("residualThreshold", params.FloatParam, default=-1,
                      label="Geometry threshold (px)",
                      help="Each micrograph pair's coordinates are fitted with the tilt "
                           "geometry; pairs whose tilted coordinate is further than this from "
                           "the fit are flagged. A value <= 0 means automatic: per micrograph "
                           "pair, max(5 px, a 5-sigma test of its own residual scale).")
        form.addParam("dropFlagged", params.BooleanParam, default=False,
                      label="Drop flagged pairs",
                      help="Leave out the pairs flagged by the geometry check (they are listed "
                           "with reason geometry_flagged in the drop report).")
        form.addParallelSection(threads=0, mpi=0)

    # --------------------------- INSERT steps functions ----------------------------------------
    def _insertAllSteps(self):
        # The arguments make Scipion's Continue rerun a step whose parameters changed. Only the
        # extraction takes the cluster options: the export and the output depend on what is
        # extracted, not on where it ran, so Continue after a changed Dask setting reruns
        # (resumes, all done) the extraction alone.
        args = self._protocolArgs()
        if self._streaming():
            # One long step follows the input and publishes the output as it grows (as
            # pyworkflow's ProtStreamingBase steps generator does): the serial executor calls
            # _stepsCheck only between steps, never while one runs.
            self._insertFunctionStep(self.watchStep, self._inputSignature(),
                                     self._extractArgs(watch=True), needsGPU=False)
            self._insertFunctionStep(self.closeOutputStep, args, needsGPU=False)
            return
        self._insertFunctionStep(self.convertInputStep, self._inputSignature(), needsGPU=False)
        self._insertFunctionStep(self.extractStep, self._extractArgs(), needsGPU=False)
        self._insertFunctionStep(self.exportStep, args, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, args, needsGPU=False)

    # --------------------------- STEPS functions -----------------------------------------------
    def convertInputStep(self, signature):
        """Write the pair table and the CTF files pairextract reads."""
        pwutils.makePath(self._inputsPath())
        coords = self.getCoords()
        mic_pairs = self._micPairs()
        rows, warnings = convert.coordinate_pairs(coords, mic_pairs)
        for w in warnings:
            self.warning(w)
        convert.write_pair_table(self._inputsPath("pairs.csv"), mic_pairs, rows,
                                 self._samplings(), convert.angles_by_mic(coords))
        self._writeCTFs(mic_pairs)

    def _writeCTFs(self, mic_pairs, fresh=False):
        """The CTF files of the views given CTFs (``fresh``: the CTF sets as their files hold
        them now, while streaming, when a missing CTF may still come and is not warned of)."""
        for view, pointer in (("untilted", self.ctfUntilt), ("tilted", self.ctfTilt)):
            if not pointer.hasValue():
                continue
            mics = [getattr(mp, "mic_" + view[0]) for mp in mic_pairs]
            ctfs = convert.ctfs_by_mic(self._freshCTFs(pointer) if fresh else pointer.get(), mics)
            if len(ctfs) < len(mics) and not fresh:
                self.warning(f"{len(mics) - len(ctfs)} of {len(mics)} {view} micrographs have "
                             "no CTF in the CTF estimation given")
            acquisition = self._extractionMics()[0 if view == "untilted" else 1]
            convert.write_ctf_star(self._inputsPath(f"ctf_{view}.star"), mics, ctfs,
                                   acquisition.getAcquisition())

    def extractStep(self, args):
        """``pairextract extract``: resumes what an earlier (stopped) run left in the folder."""
        self._runPairextract("extract " + args)

    def exportStep(self, args):
        """``pairextract export --to xmipp``: the MRC stacks and .xmd files of the kept pairs.

        A rerun (Continue after a failed step or changed parameters) writes into this
        protocol's own earlier export: ``--force`` replaces the files pairextract wrote there
        (their names are in the folder's marker) and nothing else.
        """
        source = shlex.quote(os.path.abspath(self._pairextractPath()))
        dest = shlex.quote(os.path.abspath(self._exportPath()))
        self._runPairextract(f"export {source} --to xmipp {dest} --force")

    def createOutputStep(self, args):
        coords = self.getCoords()
        mic_pairs = self._micPairs()
        imgSetU, imgSetT = self._newParticleSets()
        rows_u = convert.read_xmd(self._exportPath("images_untilted.xmd"))
        rows_t = convert.read_xmd(self._exportPath("images_tilted.xmd"))
        particles = self._particles(coords, mic_pairs, self.ctfUntilt.get(), self.ctfTilt.get(),
                                    rows_u, rows_t, self._exportPath())
        for particleU, particleT in particles:
            imgSetU.append(particleU)
            imgSetT.append(particleT)
        imgSetU.write()
        imgSetT.write()

        pairs_fn = self._getPath("particles_pairs.sqlite")
        pwutils.cleanPath(pairs_fn)
        output = ParticlesTiltPair(filename=pairs_fn)
        output.setUntilted(imgSetU)
        output.setTilted(imgSetT)
        for imgU, imgT in zip(imgSetU, imgSetT):
            output.append(TiltPair(imgU, imgT))
        output.setCoordsPair(self.inputCoordinatesTiltedPairs.get())
        self._defineOutputs(outputParticlesTiltPair=output)
        self._defineSourceRelation(self.inputCoordinatesTiltedPairs, output)

    def watchStep(self, signature, args):
        """Streaming: ``pairextract watch`` on the pair table, which this step extends as the
        input sets grow, and the output published as micrograph pairs are committed; ends
        when the input is closed and watch has committed all of it (its stop file)."""
        pwutils.makePath(self._inputsPath(), self._exportPath())
        stop = self._getExtraPath("STOP")
        pwutils.cleanPath(stop)  # ours, from an earlier (continued) run
        table = self._inputsPath("pairs.csv")
        written = convert.pair_table_ids(table)
        output = self._streamOutput()
        errors = self._getExtraPath("pairextract-stderr.log")
        program = Plugin.getProgram()
        command = (f"{program} watch {args} --stop-file {shlex.quote(os.path.abspath(stop))} "
                   f"2> >(tee {shlex.quote(errors)} >&2); status=$?; wait $!; exit $status")
        self.info(f"Running: {command}")
        self._syncStreamInput(written)  # the table exists before watch looks at it
        # a session of its own: the bash, watch and tee are signalled together below
        process = subprocess.Popen(command, shell=True, executable="/bin/bash",
                                   env=Plugin.getEnviron(), start_new_session=True)
        published_at = None
        try:
            while True:
                code = process.poll()
                closed = self._syncStreamInput(written)
                stamp = self._pairIndexStamp()
                if stamp is not None and stamp != published_at:
                    self._publish(output)
                    published_at = stamp
                if code is not None:
                    break
                if closed and not os.path.exists(stop) and self._watchHasAll():
                    self.info("The input is closed and every micrograph pair in it is "
                              "committed: stopping pairextract watch.")
                    open(stop, "w").close()
                time.sleep(self._STREAM_POLL)
        finally:
            if process.poll() is None:  # this step failed: SIGTERM closes watch's stream
                os.killpg(process.pid, signal.SIGTERM)
                process.wait()
        if code != 0:
            raise PairextractError(self._errorMessage(
                errors, subprocess.CalledProcessError(code, command)))
        self._publish(output)  # what the last commit added

    def closeOutputStep(self, args):
        """Streaming: the output, complete, is closed (STREAM_CLOSED)."""
        output = self._streamOutput()
        self._publish(output, state=Set.STREAM_CLOSED)

    # --------------------------- INFO functions ------------------------------------------------
    def _validate(self):
        errors = []
        if self.doFlip and not self._useCTF():
            errors.append("Phase flipping cannot be performed unless "
                          "CTF information is provided.")
        if self.doNormalize and self.backRadius > int(self.boxSize.get() / 2):
            errors.append("Background radius for normalization should be "
                          "equal or less than half of the box size.")
        if self.clusterType == CLUSTER_ADDRESS and not self.schedulerAddress.get("").strip():
            errors.append("Run on 'scheduler address' needs the scheduler's address or file.")
        return errors

    def _summary(self):
        summary = [f"Micrographs source: {self.getEnumText('downsampleType')}",
                   f"Particle box size: {self.boxSize.get()}"]
        if not hasattr(self, "outputParticlesTiltPair"):
            summary.append("Output images not ready yet.")
        else:
            summary.append("Particle pairs extracted: "
                           f"{self.outputParticlesTiltPair.getSize()}")
            if self.outputParticlesTiltPair.isStreamOpen():
                summary.append("Streaming: pairextract watch follows the input; the output "
                               "grows until the input is closed.")
        if self.doFlip:
            if self.ctfTilt.hasValue() and self.ctfUntilt.hasValue():
                summary.append("Phase flipped for both untilted and tilted particles.")
            elif self.ctfUntilt.hasValue():
                summary.append("Phase flipped only for untilted particles.")
            else:
                summary.append("Phase flipped only for tilted particles.")
        summary += convert.summary_lines(self.getRunSummary())
        return summary

    def _methods(self):
        if not hasattr(self, "outputParticlesTiltPair"):
            return []
        msg = (f"A total of {self.outputParticlesTiltPair.getSize()} particle pairs of size "
               f"{self.boxSize.get()} were extracted with pairextract")
        if self._micsOther():
            msg += (" from another set of micrographs: "
                    + self.getObjectTag("inputMicrographsTiltedPair"))
        msg += f" using coordinates {self.getObjectTag('inputCoordinatesTiltedPairs')}."
        methods = [msg]
        if self.doRemoveDust:
            methods.append(f"Removed dust over a threshold of {self.thresholdDust.get()}.")
        if self.doInvert:
            methods.append("Inverted contrast on images.")
        if self._doDownsample():
            methods.append(f"Particles downsampled by a factor of {self.downFactor.get():0.2f}.")
        if self.doNormalize:
            methods.append(f"Normalization performed of type {self.getEnumText('normType')}.")
        if self.doFlip:
            methods.append("Phase flipping was performed.")
        return methods

    # --------------------------- UTILS functions -----------------------------------------------
    def getCoords(self):
        return self.inputCoordinatesTiltedPairs.get()

    def getRunSummary(self):
        """pairextract's summary.json of the last run (counts, dropped by reason, failures)."""
        return convert.read_summary(self._pairextractPath("summary.json"))

    def _inputsPath(self, *names):
        return self._getExtraPath("inputs", *names)

    def _pairextractPath(self, *names):
        return self._getExtraPath("pairextract", *names)

    def _exportPath(self, *names):
        return self._getExtraPath("xmipp", *names)

    def _micsOther(self):
        return self.downsampleType == OTHER

    def _useCTF(self):
        return self.ctfUntilt.hasValue() or self.ctfTilt.hasValue()

    def _doDownsample(self):
        return self.downFactor > 1.0

    def _micPairs(self):
        other = self.inputMicrographsTiltedPair.get() if self._micsOther() else None
        try:
            return convert.micrograph_pairs(self.getCoords(), other)
        except convert.ConversionError as exc:
            raise PairextractError(str(exc)) from None

    def _extractionMics(self):
        """The untilted and tilted SetOfMicrographs particles are cut from."""
        if self._micsOther():
            pair = self.inputMicrographsTiltedPair.get()
            return pair.getUntilted(), pair.getTilted()
        coords = self.getCoords()
        return coords.getUntilted().getMicrographs(), coords.getTilted().getMicrographs()

    def _samplings(self):
        """Per view ``(picking, extraction)`` pixel sizes in A/px."""
        coords = self.getCoords()
        mics_u, mics_t = self._extractionMics()
        return {"u": (coords.getUntilted().getMicrographs().getSamplingRate(),
                      mics_u.getSamplingRate()),
                "t": (coords.getTilted().getMicrographs().getSamplingRate(),
                      mics_t.getSamplingRate())}

    def _outputSampling(self, view_sampling):
        sampling = view_sampling[1]
        return sampling * self.downFactor.get() if self._doDownsample() else sampling

    def _coordFactor(self, sampling):
        """Per view, the factor scaling the input coordinates onto the output particles (as
        Xmipp's createOutputStep), or None where they are kept as they are."""
        if not (self._micsOther() or self._doDownsample()):
            return {"u": None, "t": None}
        out = {}
        for view, (coord_s, mic_s) in sampling.items():
            factor = 1 / (mic_s / coord_s)
            out[view] = factor / self.downFactor.get() if self._doDownsample() else factor
        return out

    def _inputSignature(self):
        """What the converted inputs depend on (Continue reconverts when it changes)."""
        parts = [self.inputCoordinatesTiltedPairs.getUniqueId(), self.downsampleType.get()]
        for pointer in (self.inputMicrographsTiltedPair, self.ctfUntilt, self.ctfTilt):
            parts.append(pointer.getUniqueId() if pointer.hasValue() else "")
        return " ".join(str(p) for p in parts)

    def _extractArgs(self, watch=False):
        """Arguments of ``pairextract extract`` (``watch``: of ``pairextract watch``) for this
        form (no shell expansion needed)."""
        return f"{self._protocolArgs()} {self._clusterArgs(progress=not watch)}"

    def _protocolArgs(self):
        """The arguments that decide what is extracted: input, output and the protocol's
        options (what the export and output steps depend on)."""
        q = shlex.quote
        args = [q(os.path.abspath(self._inputsPath("pairs.csv"))),
                "--out", q(os.path.abspath(self._pairextractPath())),
                "--box", str(self.boxSize.get()),
                "--downsample", repr(float(self.downFactor.get()))]
        if self.doBorders:
            args.append("--fill-borders")
        if self.doRemoveDust:
            args += ["--dust-threshold", repr(float(self.thresholdDust.get()))]
        else:
            args.append("--no-dust")
        if self.doInvert:
            args.append("--invert")
        if self.doFlip:
            args.append("--phase-flip")
            if self.tiltAwareFlip:
                args += ["--tilt-defocus", "geometry",
                         "--tilt-sign", "1" if self.tiltSign.get() == 0 else "-1"]
        if self.doNormalize:
            args += ["--norm", NORM_TYPES[self.normType.get()],
                     "--bg-radius", str(self.backRadius.get())]
        else:
            args += ["--norm", "none"]
        for view, pointer in (("untilted", self.ctfUntilt), ("tilted", self.ctfTilt)):
            if pointer.hasValue():
                path = os.path.abspath(self._inputsPath(f"ctf_{view}.star"))
                args += [f"--ctf-{view}", q(path)]
        if self.useFloat16:
            args.append("--float16")
        if self.residualThreshold.get() > 0:
            args += ["--residual-threshold", repr(float(self.residualThreshold.get()))]
        if self.dropFlagged:
            args.append("--drop-flagged")
        return " ".join(args)

    def _clusterArgs(self, progress=True):
        """Where the extraction runs: the Dask options (they do not change its result);
        ``progress``: with ``--no-progress`` (an option of extract, not of watch)."""
        q = shlex.quote
        args = ["--no-progress"] if progress else []
        cluster = self.clusterType.get()
        if cluster == CLUSTER_LOCAL:
            args += ["--cluster", "local", "--workers", str(self.workers.get())]
        elif cluster == CLUSTER_SLURM:
            args += ["--cluster", "slurm", "--workers", str(self.workers.get()),
                     "--jobs", str(self.slurmJobs.get())]
            if self.jobqueueConfig.get("").strip():
                args += ["--jobqueue-config", q(self.jobqueueConfig.get().strip())]
        else:
            args += ["--scheduler", q(self.schedulerAddress.get().strip())]
        return " ".join(args)

    # --------------------------- helpers of the output ----------------------------------------
    def _newParticleSets(self):
        """The untilted and tilted output SetOfParticles, empty, with their set-level info."""
        coords = self.getCoords()
        mics_u, mics_t = self._extractionMics()
        sampling = self._samplings()
        sets = []
        for suffix, mics, view, coord_set, pointer in (
                ("Untilted", mics_u, "u", coords.getUntilted(), self.ctfUntilt),
                ("Tilted", mics_t, "t", coords.getTilted(), self.ctfTilt)):
            img_set = self._createSetOfParticles(suffix=suffix)
            img_set.copyInfo(mics)
            img_set.setSamplingRate(self._outputSampling(sampling[view]))
            img_set.setCoordinates(coord_set)
            # Per view, as Xmipp's protocol: a view is phase flipped when its CTFs were given.
            # Unlike Xmipp, hasCTF also says so without flipping: the particles carry the CTFs.
            img_set.setHasCTF(pointer.hasValue())
            img_set.setIsPhaseFlipped(bool(self.doFlip) and pointer.hasValue())
            sets.append(img_set)
        return sets

    def _particles(self, coords, mic_pairs, ctf_set_u, ctf_set_t, rows_u, rows_t, folder):
        """``(untilted, tilted)`` Particle of each pair of an export's ``.xmd`` rows: id = pair
        id, image in ``folder``, the input coordinate (scaled as Xmipp does), micrograph id and
        the CTF of its micrograph."""
        if [r["itemId"] for r in rows_u] != [r["itemId"] for r in rows_t]:
            raise PairextractError(f"{folder}: the untilted and tilted .xmd files "
                                   "do not list the same pairs in the same order")
        ctfs = {"u": convert.ctfs_by_mic(ctf_set_u, [m.mic_u for m in mic_pairs]),
                "t": convert.ctfs_by_mic(ctf_set_t, [m.mic_t for m in mic_pairs])}
        extract_id = {}
        for mp in mic_pairs:
            extract_id[("u", mp.pick_u.getObjId())] = mp.mic_u.getObjId()
            extract_id[("t", mp.pick_t.getObjId())] = mp.mic_t.getObjId()
        coord_sets = {"u": {c.getObjId(): c.clone() for c in coords.getUntilted().iterItems()},
                      "t": {c.getObjId(): c.clone() for c in coords.getTilted().iterItems()}}
        factor = self._coordFactor(self._samplings())
        out = []
        for rowU, rowT in zip(rows_u, rows_t):
            pair_id = int(rowU["itemId"])
            pair = []
            for row, view in ((rowU, "u"), (rowT, "t")):
                coord = coord_sets[view][pair_id]
                if factor[view] is not None:
                    coord.setX(int(coord.getX() * factor[view]))
                    coord.setY(int(coord.getY() * factor[view]))
                particle = Particle()
                particle.setObjId(pair_id)
                particle.setLocation(convert.image_location(row["image"], folder))
                particle.setCoordinate(coord)
                particle.setMicId(coord.getMicId())
                ctf = ctfs[view].get(extract_id[(view, coord.getMicId())])
                if ctf is not None:
                    particle.setCTF(ctf.clone())
                pair.append(particle)
            out.append(tuple(pair))
        return out

    # --------------------------- helpers of streaming ------------------------------------------
    _STREAM_POLL = 2  # seconds between looks at the input and at watch's output

    def _streaming(self):
        """Whether this run follows its input: the input is open, or an earlier run of this
        protocol followed it (a Continue after the input closed goes on with the same steps
        and the output it published; Restart empties the folder first)."""
        return os.path.exists(self._pairextractPath("watch.json")) or self._inputStreamOpen()

    def _inputStreamOpen(self):
        """Whether the input coordinates are still being written: either view's set, as its
        own sqlite says (where a streaming protocol updates it), has its stream open."""
        coords = self.getCoords()
        states = []
        for coord_set in (coords.getUntilted(), coords.getTilted()):
            fresh = self._freshSet(SetOfCoordinates, coord_set)
            states.append(fresh.isStreamOpen())
            fresh.close()
        return any(states)

    @staticmethod
    def _freshSet(cls, item_set):
        """``item_set`` as its sqlite holds it now (items and stream state), not as this
        process loaded it from the project."""
        fresh = cls(filename=item_set.getFileName())
        fresh.loadProperty("_streamState", Set.STREAM_CLOSED)
        return fresh

    def _inputSnapshot(self):
        """The input coordinate pair as its files hold it now, and whether it is closed: the
        state is read before the items, so a closed set is read whole."""
        coords = self.getCoords()
        snapshot = _CoordinatesSnapshot()
        closed = True
        for name, coord_set in (("untilted", coords.getUntilted()),
                                ("tilted", coords.getTilted())):
            fresh = self._freshSet(SetOfCoordinates, coord_set)
            closed = closed and not fresh.isStreamOpen()
            setattr(snapshot, name, _CoordinatesView(
                fresh, self._freshSet(SetOfMicrographs, coord_set.getMicrographs())))
        angles = coords.getAngles()
        if angles is not None and angles.getFileName():
            snapshot.angles = self._freshSet(SetOfAngles, angles)
        return snapshot, closed

    def _freshCTFs(self, pointer):
        return self._freshSet(SetOfCTF, pointer.get()) if pointer.hasValue() else None

    def _snapshotMicPairs(self, snapshot):
        other = None
        if self._micsOther():
            pair = self.inputMicrographsTiltedPair.get()
            other = _MicrographsSnapshot(self._freshSet(SetOfMicrographs, pair.getUntilted()),
                                         self._freshSet(SetOfMicrographs, pair.getTilted()))
        return convert.micrograph_pairs(snapshot, other)

    def _syncStreamInput(self, written):
        """Append the input's new coordinate pairs to the pair table (``written``: the pair ids
        already there, updated) and rewrite the CTF files that changed; True once the input
        is closed and all of it is in the table."""
        stamp = self._inputStamp()
        if stamp == getattr(self, "_lastInput", (None, None))[0]:
            return self._lastInput[1]  # no input file changed: nothing to read again
        snapshot, closed = self._inputSnapshot()
        try:
            mic_pairs = self._snapshotMicPairs(snapshot)
            rows, warnings = convert.coordinate_pairs(snapshot, mic_pairs)
        except convert.ConversionError as exc:
            if closed:
                raise PairextractError(str(exc)) from None
            return False  # e.g. one view's micrographs committed before the other's
        new = [r for r in rows if r[0] not in written]
        if new or not os.path.exists(self._inputsPath("pairs.csv")):
            convert.write_pair_table(self._inputsPath("pairs.csv"), mic_pairs, new,
                                     self._samplings(), convert.angles_by_mic(snapshot),
                                     append=True)
            written.update(r[0] for r in new)
            if new:
                self.info(f"{len(new)} new coordinate pair(s) given to pairextract watch "
                          f"({len(written)} in all)")
        self._writeCTFs(mic_pairs, fresh=True)
        self._lastInput = (stamp, closed)
        if closed and not getattr(self, "_closedInputWarned", False):
            # the input complete: said once, as the batch conversion says it
            self._closedInputWarned = True
            for w in warnings:
                self.warning(w)
        return closed

    def _inputStamp(self):
        """Size and modification time of every input set's file: a committed change to any
        of them changes it (each poll would otherwise read every set whole)."""
        coords = self.getCoords()
        sets = [coords.getUntilted(), coords.getTilted(), coords.getUntilted().getMicrographs(),
                coords.getTilted().getMicrographs()]
        for pointer in (self.ctfUntilt, self.ctfTilt):
            if pointer.hasValue():
                sets.append(pointer.get())
        if self._micsOther():
            pair = self.inputMicrographsTiltedPair.get()
            sets += [pair.getUntilted(), pair.getTilted()]
        stamp = []
        for item_set in sets:
            try:
                st = os.stat(item_set.getFileName())
                stamp.append((st.st_ino, st.st_size, st.st_mtime_ns))
            except (OSError, TypeError):
                stamp.append(None)
        return tuple(stamp)

    def _watchHasAll(self):
        """Whether watch has seen every micrograph pair of the table and none waits."""
        status = convert.read_watch_status(self._pairextractPath("watch.json"))
        mic_pairs = convert.pair_table_ids(self._inputsPath("pairs.csv"), "mic_pair_id")
        return (status.get("seen") == len(mic_pairs) and status.get("waiting") == 0
                and status.get("state") == "open")

    def _pairIndexStamp(self):
        """Changes whenever watch commits: its pair index is replaced by a rename."""
        path = self._pairextractPath("pairs.parquet")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _streamOutput(self):
        """The output being published: this protocol's (after a Continue), else new sets."""
        if hasattr(self, "outputParticlesTiltPair"):
            output = self.outputParticlesTiltPair
            for item_set in (output.getUntilted(), output.getTilted(), output):
                item_set.enableAppend()
            return output
        imgSetU, imgSetT = self._newParticleSets()
        pairs_fn = self._getPath("particles_pairs.sqlite")
        pwutils.cleanPath(pairs_fn)
        output = ParticlesTiltPair(filename=pairs_fn)
        output.setUntilted(imgSetU)
        output.setTilted(imgSetT)
        output.setCoordsPair(self.inputCoordinatesTiltedPairs.get())
        return output

    def _publish(self, output, state=Set.STREAM_OPEN):
        """Export the pairs committed since the last publication (``--exclude-pairs``: the
        ids the output lists) into a new part folder and append them to the output, whose
        stream state becomes ``state``."""
        source = self._pairextractPath("pairs.parquet")
        new = []
        if os.path.exists(source):
            listed = self._getExtraPath("xmipp", "published.txt")
            ids = output.getUntilted().getIdSet() if output.getSize() else set()
            with open(listed, "w") as f:
                f.write("".join(f"{i}\n" for i in sorted(ids)))
            part = self._exportPath(f"part-{self._nextPart():03d}")
            q = shlex.quote
            self._runPairextract(f"export {q(os.path.abspath(self._pairextractPath()))} "
                                 f"--to xmipp {q(os.path.abspath(part))} "
                                 f"--exclude-pairs {q(os.path.abspath(listed))}")
            rows_u = convert.read_xmd(os.path.join(part, "images_untilted.xmd"))
            rows_t = convert.read_xmd(os.path.join(part, "images_tilted.xmd"))
            if rows_u:
                snapshot, _ = self._inputSnapshot()
                new = self._particles(snapshot, self._snapshotMicPairs(snapshot),
                                      self._freshCTFs(self.ctfUntilt),
                                      self._freshCTFs(self.ctfTilt), rows_u, rows_t, part)
            else:
                pwutils.cleanPath(part)  # nothing new: no empty part left behind
        if not new and state == Set.STREAM_OPEN:
            return  # defined with its first pairs (an empty set cannot be appended to later)
        next_id = output.getSize() + 1  # pairs numbered 1..n in the order published
        for k, (particleU, particleT) in enumerate(new):
            output.getUntilted().append(particleU)
            output.getTilted().append(particleT)
            output.append(TiltPair(particleU, particleT, objId=next_id + k))
        defined = hasattr(self, "outputParticlesTiltPair")
        for item_set in (output.getUntilted(), output.getTilted()):
            item_set.setStreamState(state)
        self._updateOutputSet("outputParticlesTiltPair", output, state=state)
        if not defined:
            self._defineSourceRelation(self.inputCoordinatesTiltedPairs, output)
        for item_set in (output.getUntilted(), output.getTilted(), output):
            item_set.enableAppend()  # _updateOutputSet closed them
        if new:
            self.info(f"{len(new)} particle pair(s) published, {output.getSize()} in all")

    def _nextPart(self):
        parts = [int(n[5:]) for n in os.listdir(self._exportPath())
                 if n.startswith("part-") and n[5:].isdigit()]
        return max(parts, default=0) + 1

    def _runPairextract(self, args):
        """Run pairextract from its own environment; its error paragraph becomes the
        protocol's error message."""
        errors = self._getExtraPath("pairextract-stderr.log")
        # stderr goes to the run log as it comes and to a file whose last error paragraph
        # becomes the message Scipion shows; bash waits for tee before returning the status.
        command = (f"{args} 2> >(tee {shlex.quote(errors)} >&2); status=$?; wait $!; "
                   "exit $status")
        try:
            self.runJob(Plugin.getProgram(), command, env=Plugin.getEnviron(),
                        executable="/bin/bash")
        except subprocess.CalledProcessError as exc:
            raise PairextractError(self._errorMessage(errors, exc)) from None

    @staticmethod
    def _errorMessage(errors_path, exc):
        text = ""
        if os.path.exists(errors_path):
            with open(errors_path, errors="replace") as f:
                text = f.read()
        lines = text.strip().splitlines()
        start = next((i for i in range(len(lines) - 1, -1, -1)
                      if lines[i].startswith("pairextract ") and ": error:" in lines[i]), None)
        if start is None:
            detail = "\n".join(lines[-20:]) or "(nothing on its standard error)"
            return (f"pairextract exited with status {exc.returncode}:\n{detail}\n"
                    f"Command: {exc.cmd}")
        message = "\n".join(lines[start:])
        if "holds a run with other parameters" in message:
            message += ("\nIn Scipion: Continue reuses a run only with the parameters it was "
                        "started with; use Restart to extract again with the new ones.")
        return message


class _CoordinatesSnapshot:
    """What the conversion reads of a CoordinatesTiltPair (``getUntilted``, ``getTilted``,
    ``getAngles``), with the sets as their files hold them at one moment (streaming)."""

    untilted = tilted = angles = None

    def getUntilted(self):
        return self.untilted

    def getTilted(self):
        return self.tilted

    def getAngles(self):
        return self.angles


class _CoordinatesView:
    """A SetOfCoordinates read fresh, with its micrographs read fresh: what the conversion
    reads of it (``iterItems``, ``getMicrographs``), without setting a pointer to an object
    outside the project (pyworkflow warns of those)."""

    def __init__(self, coordinates, micrographs):
        self._coordinates, self._micrographs = coordinates, micrographs

    def iterItems(self, **kwargs):
        return self._coordinates.iterItems(**kwargs)

    def getMicrographs(self):
        return self._micrographs


class _MicrographsSnapshot:
    """The same for a MicrographsTiltPair (the *other* micrographs)."""

    def __init__(self, untilted, tilted):
        self._pair = (untilted, tilted)

    def getUntilted(self):
        return self._pair[0]

    def getTilted(self):
        return self._pair[1]
