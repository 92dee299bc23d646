"""The protocol in a real Scipion project, headless, against ``pairextract extract`` run directly.

Synthetic micrograph pairs with known truth (``pairextract.testing.synth``, run in pairextract's own
environment) are imported as a Scipion user does: the micrograph pairs with *import micrograph
pairs*, the tilt-pair coordinates with *import coordinate pairs* (Xmipp tilt-pair picker files),
the CTFs with *import ctf* (Xmipp .ctfparam). The protocol then runs in its own process like in
the GUI, and its registered ParticlesTiltPair is compared with the output of the same
extraction run by the pairextract command line: ids, pairing, sampling, flags, CTFs,
coordinates, and every image (read from the registered index@file locations with mrcfile and,
for some, with Xmipp's own image library).

pairextract is found through the plugin's configuration (``PAIREXTRACT_HOME``, ...), as the
protocol finds it.
"""

import json
import os
import sqlite3
import subprocess
import time

import mrcfile
import numpy as np
import xmippLib  # Xmipp's image library, installed with scipion-em (pyxmipp3)
from pwem.protocols import ProtImportCoordinatesPairs, ProtImportCTF, ProtImportMicrographsTiltPairs
from pyworkflow.object import Set
from pyworkflow.protocol import STATUS_ABORTED, STATUS_FAILED, STATUS_FINISHED
from pyworkflow.tests import BaseTest, setupTestProject

from pairextract_scipion import Plugin
from pairextract_scipion.constants import CLUSTER_ADDRESS, CLUSTER_SLURM, OTHER
from pairextract_scipion.convert import read_xmd
from pairextract_scipion.protocols import ProtPairextractExtractPairs

HERE = os.path.dirname(os.path.abspath(__file__))
BOX = 64
# The synthetic data: pairs of micrographs (HEIGHT x WIDTH, 2 A/px), particles per pair.
N_MIC_PAIRS, HEIGHT, WIDTH, PER_PAIR = 8, 1024, 1024, 16


def run_in_pairextract_env(command, cwd):
    """Run a shell command (a pairextract command line, or its Python) in pairextract's
    environment, as the protocol does; return its standard output."""
    proc = subprocess.run(command, shell=True, cwd=cwd, env=Plugin.getEnviron(),
                          executable="/bin/bash", capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{command} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def direct_run(data, name, options):
    """``pairextract extract`` + ``export --to xmipp`` on the synthetic pair table; returns the
    export folder."""
    out = os.path.join(data, name)
    program = Plugin.getProgram()
    run_in_pairextract_env(f"{program} extract pairs.csv --out {name} --no-progress "
                           f"--workers 1 {options}", data)
    run_in_pairextract_env(f"{program} export {name} --to xmipp {name}-xmipp", data)
    return out + "-xmipp"


def read_stack(path):
    with mrcfile.open(path, permissive=True) as mrc:
        return np.array(mrc.data)


class StreamedCoordinates:
    """The two coordinate sets of a finished import, written again as a streaming picker
    writes its output: emptied with their stream open, then given back one micrograph pair at
    a time (the untilted set committed before the tilted one), then closed.

    Each change is one sqlite transaction on the set's file, the way pyworkflow's flat mapper
    commits a streaming protocol's output (``Objects`` rows, ``Properties`` ``_size`` and
    ``_streamState``); the rows are the import's own, so the ids are those of a batch import.
    """

    def __init__(self, paths):
        self.paths = paths  # {"u": sqlite path, "t": ...}
        self.rows = {}  # view -> [rows of micrograph pair 1, of pair 2, ...]
        for view, path in paths.items():
            with sqlite3.connect(path) as con:
                column = con.execute("SELECT column_name FROM Classes "
                                     "WHERE label_property = '_micId'").fetchone()[0]
                self.columns = [r[1] for r in con.execute("PRAGMA table_info(Objects)")]
                rows = con.execute("SELECT * FROM Objects ORDER BY id").fetchall()
                mic = self.columns.index(column)
                by_mic = {}
                for row in rows:
                    by_mic.setdefault(row[mic], []).append(row)
                self.rows[view] = [by_mic[m] for m in sorted(by_mic)]
                con.execute("DELETE FROM Objects")
                self._set(con, Set.STREAM_OPEN)
        self.given = 0

    def _set(self, con, state):
        size = con.execute("SELECT COUNT(*) FROM Objects").fetchone()[0]
        for key, value in (("_size", size), ("_streamState", state)):
            if not con.execute("UPDATE Properties SET value = ? WHERE key = ?",
                               (str(value), key)).rowcount:
                con.execute("INSERT INTO Properties (key, value) VALUES (?, ?)",
                            (key, str(value)))

    def add(self, n=1, pause=0.5):
        """Commit the next ``n`` micrograph pairs' coordinates, view after view."""
        for _ in range(n):
            for view in ("u", "t"):
                with sqlite3.connect(self.paths[view]) as con:
                    rows = self.rows[view][self.given]
                    con.executemany(f"INSERT INTO Objects VALUES "
                                    f"({', '.join('?' * len(self.columns))})", rows)
                    self._set(con, Set.STREAM_OPEN)
                time.sleep(pause)
            self.given += 1

    def close(self):
        for view in ("u", "t"):
            with sqlite3.connect(self.paths[view]) as con:
                self._set(con, Set.STREAM_CLOSED)


def published(path):
    """``(pairs, stream state)`` of an output ParticlesTiltPair's sqlite as it is now."""
    if not os.path.exists(path):
        return 0, None
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        try:
            n = con.execute("SELECT COUNT(*) FROM Objects").fetchone()[0]
            state = con.execute("SELECT value FROM Properties WHERE key = '_streamState'"
                                ).fetchone()
        except sqlite3.OperationalError:  # being created
            return 0, None
    return n, None if state is None else int(state[0])


class TestPairextractExtractPairs(BaseTest):
    """One project: imports once, then the protocol in several configurations."""

    @classmethod
    def setUpClass(cls):
        setupTestProject(cls)
        cls.data = os.path.join(cls.outputPath, "synthetic")
        python = Plugin.getCommand("python3")
        cls.truth = json.loads(run_in_pairextract_env(
            f"{python} {os.path.join(HERE, 'synth_data.py')} {cls.data} {N_MIC_PAIRS} "
            f"{HEIGHT} {WIDTH} {PER_PAIR} {BOX}", cls.outputPath))
        acquisition = dict(voltage=300.0, sphericalAberration=2.7, ampContrast=0.1)
        cls.protMics = cls.launchProtocol(cls.newProtocol(
            ProtImportMicrographsTiltPairs, objLabel="micrograph pairs",
            patternUntilted=os.path.join(cls.data, "mics", "u*.mrc"),
            patternTilted=os.path.join(cls.data, "mics", "t*.mrc"),
            samplingRate=2.0, **acquisition))
        micPairs = cls.protMics.outputMicrographsTiltPair
        # Without the picker's micrograph .xmd (the tilt angles): with it, pwem 3.11.1's
        # import fails with scipion-em-xmipp 29 ("module 'xmipp3' has no attribute
        # 'XmippMdRow'"). Without angles pairextract uses the ones it fits.
        cls.protCoords = cls.newProtocol(
            ProtImportCoordinatesPairs, objLabel="coordinate pairs",
            importFrom=ProtImportCoordinatesPairs.IMPORT_FROM_XMIPP, xmippMdFn="",
            patternUntilted=os.path.join(cls.data, "coords", "u*.pos"),
            patternTilted=os.path.join(cls.data, "coords", "t*.pos"), boxSize=BOX)
        cls.protCoords.inputMicrographsTiltedPair.set(micPairs)
        cls.launchProtocol(cls.protCoords)
        cls.coords = cls.protCoords.outputCoordinatesTiltPair
        cls.ctfs = {}
        for view, pattern in (("untilted", "u*.ctfparam"), ("tilted", "t*.ctfparam")):
            prot = cls.newProtocol(ProtImportCTF, objLabel=f"ctf {view}",
                                   importFrom=ProtImportCTF.IMPORT_FROM_XMIPP3,
                                   filesPath=os.path.join(cls.data, "ctfs"),
                                   filesPattern=pattern)
            prot.inputMicrographs.set(cls.protMics)
            prot.inputMicrographs.setExtended(f"outputMicrographsTiltPair._{view}")
            cls.ctfs[view] = cls.launchProtocol(prot).outputCTF
        # The reference: the same extraction by pairextract's command line.
        ctf_options = ("--ctf-untilted micrographs_ctf.star "
                       "--ctf-tilted micrographs_ctf.star")
        cls.reference = direct_run(cls.data, "direct",
                                   f"--box {BOX} --invert --phase-flip {ctf_options}")

    # ------------------------------------------------------------------ helpers --------------
    def newExtraction(self, label, **kwargs):
        values = dict(boxSize=BOX, doInvert=True, doFlip=True, workers=1)
        values.update(kwargs)
        prot = self.newProtocol(ProtPairextractExtractPairs, objLabel=label, **values)
        prot.inputCoordinatesTiltedPairs.set(self.protCoords)
        prot.inputCoordinatesTiltedPairs.setExtended("outputCoordinatesTiltPair")
        return prot

    def setCTFs(self, prot):
        prot.ctfUntilt.set(self.ctfs["untilted"])
        prot.ctfTilt.set(self.ctfs["tilted"])

    def assertOutputEqualsReference(self, prot, reference, sampling, flipped, box=BOX,
                                    coords=None):
        output = prot.outputParticlesTiltPair
        ref_u = read_xmd(os.path.join(reference, "images_untilted.xmd"))
        ref_stack = {"untilted": read_stack(os.path.join(reference, "untilted.mrcs")),
                     "tilted": read_stack(os.path.join(reference, "tilted.mrcs"))}
        ref_ids = [int(r["itemId"]) for r in ref_u]
        row_of = {pid: k for k, pid in enumerate(ref_ids)}
        # Counts and pairing: the kept pairs, by coordinate id, in both views.
        setU, setT = output.getUntilted(), output.getTilted()
        self.assertEqual(output.getSize(), len(ref_ids))
        self.assertEqual(setU.getSize(), len(ref_ids))
        self.assertEqual(setT.getSize(), len(ref_ids))
        self.assertEqual([p.getObjId() for p in setU], ref_ids)
        self.assertEqual([p.getObjId() for p in setT], ref_ids)
        # Pair k holds (copies of) untilted and tilted particle k: the same pair id.
        self.assertEqual([(p.getUntilted().getLocation(), p.getTilted().getLocation(),
                           p.getUntilted().getCoordinate().getX(),
                           p.getTilted().getCoordinate().getX()) for p in output],
                         [(u.getLocation(), t.getLocation(), u.getCoordinate().getX(),
                           t.getCoordinate().getX()) for u, t in zip(setU, setT)])
        coords = self.coords if coords is None else coords
        self.assertEqual(output.getCoordsPair().getObjId(), coords.getObjId())
        if not prot.doBorders.get():  # pairs with a box off a micrograph are not kept
            self.assertTrue(self.truth["edge_pair_ids"])
            self.assertFalse(set(self.truth["edge_pair_ids"]) & set(ref_ids))
        # Sampling, flags.
        for imgSet in (setU, setT):
            self.assertAlmostEqual(imgSet.getSamplingRate(), sampling)
            self.assertEqual(imgSet.isPhaseFlipped(), flipped)
            self.assertEqual(imgSet.getDim()[:2], (box, box))
        # Each particle: its coordinate (the input's, scaled as Xmipp scales it), micrograph,
        # CTF and image.
        inputU = {c.getObjId(): c.clone() for c in coords.getUntilted()}
        inputT = {c.getObjId(): c.clone() for c in coords.getTilted()}
        scale = 2.0 / sampling
        xmipp_checked = 0
        for view, imgSet, inputs in (("untilted", setU, inputU), ("tilted", setT, inputT)):
            ctfByMic = {}
            if prot.ctfUntilt.hasValue():
                ctfSet = self.ctfs[view]
                ctfByMic = {c.getMicrograph().getObjId(): c.getDefocusU() for c in ctfSet}
            for particle in imgSet:
                pid = particle.getObjId()
                coord, given = particle.getCoordinate(), inputs[pid]
                self.assertEqual((coord.getX(), coord.getY()),
                                 (int(given.getX() * scale), int(given.getY() * scale)))
                self.assertEqual(particle.getMicId(), given.getMicId())
                self.assertAlmostEqual(particle.getSamplingRate(), sampling)
                if ctfByMic:
                    self.assertEqual(particle.getCTF().getDefocusU(), ctfByMic[given.getMicId()])
                else:
                    self.assertFalse(particle.hasCTF())
                index, path = particle.getLocation()
                with mrcfile.mmap(os.path.join(self.outputPath, path), permissive=True) as m:
                    image = np.array(m.data[index - 1])
                np.testing.assert_array_equal(image, ref_stack[view][row_of[pid]],
                                              err_msg=f"{view} particle {pid}")
                if xmipp_checked < 3:  # Xmipp's own image reader reads the same pixels
                    location = f"{index:06d}@{os.path.join(self.outputPath, path)}"
                    xmipp = xmippLib.Image(location).getData()
                    np.testing.assert_array_equal(xmipp, image)
                    xmipp_checked += 1

    # ------------------------------------------------------------------ tests ----------------
    def test_extract_same_as_picking(self):
        prot = self.newExtraction("same micrographs, flip")
        self.setCTFs(prot)
        self.launchProtocol(prot)
        self.assertOutputEqualsReference(prot, self.reference, sampling=2.0, flipped=True)
        summary = "\n".join(prot.summary())
        kept = prot.outputParticlesTiltPair.getSize()
        edge = len(self.truth["edge_pair_ids"])
        self.assertIn(f"Coordinate pairs: {self.truth['pairs']} in, {kept} kept, {edge} dropped",
                      summary)
        self.assertIn("dropped (outside_border_untilted)", summary)
        self.assertIn("dropped (outside_border_tilted)", summary)
        self.assertIn(f"Micrographs: {2 * N_MIC_PAIRS} extracted, 0 reused", summary)
        self.assertIn("Phase flipped for both untilted and tilted particles.", summary)

    def test_extract_other_micrographs_downsampled(self):
        other = self.launchProtocol(self.newProtocol(
            ProtImportMicrographsTiltPairs, objLabel="other micrograph pairs",
            patternUntilted=os.path.join(self.data, "mics", "u*.mrc"),
            patternTilted=os.path.join(self.data, "mics", "t*.mrc"),
            samplingRate=2.0, voltage=300.0, sphericalAberration=2.7, ampContrast=0.1))
        box = BOX // 2
        prot = self.newExtraction("other micrographs, downsampled", downsampleType=OTHER,
                                  downFactor=2.0, boxSize=box, doInvert=False, doFlip=False,
                                  doRemoveDust=False, doBorders=True, normType=1, backRadius=12)
        prot.inputMicrographsTiltedPair.set(other)
        prot.inputMicrographsTiltedPair.setExtended("outputMicrographsTiltPair")
        self.launchProtocol(prot)
        reference = direct_run(self.data, "direct-downsampled",
                               f"--box {box} --downsample 2 --no-dust --fill-borders "
                               "--norm NewXmipp --bg-radius 12")
        self.assertOutputEqualsReference(prot, reference, sampling=4.0, flipped=False, box=box)
        # Extracted from the other micrographs, and every pair kept (borders filled).
        first = prot.outputParticlesTiltPair.getUntilted().getFirstItem()
        self.assertEqual(prot.outputParticlesTiltPair.getSize(), self.truth["pairs"])
        self.assertIn(other.getWorkingDir(), open(prot._getExtraPath("inputs", "pairs.csv"))
                      .read().splitlines()[1])
        self.assertIsNotNone(first)

    def test_continue_reuses_finished_micrographs(self):
        prot = self.newExtraction("stopped, then continued")
        self.setCTFs(prot)
        self.proj.launchProtocol(prot, wait=False)
        work = prot._getExtraPath("pairextract", "_work")
        deadline = time.time() + 300
        while time.time() < deadline:
            # a worker's journal holding a record: its header line and more (one write each)
            journals = [f for f in os.listdir(work)
                        if f.startswith("journal-") and f.endswith(".part")] \
                if os.path.isdir(work) else []
            if any(os.path.getsize(os.path.join(work, f)) > len(b"pairextract-journal 1\n")
                   for f in journals):
                break
            time.sleep(0.05)
        self.proj.stopProtocol(prot)
        self.assertEqual(prot.getStatus(), STATUS_ABORTED)
        self.assertFalse(os.path.exists(prot._getExtraPath("pairextract", "summary.json")),
                         "the extraction finished before it could be stopped")
        # Continue (Scipion's default run mode after a run): the extraction step runs again.
        self.launchProtocol(prot)
        self.assertEqual(prot.getStatus(), STATUS_FINISHED)
        summary = prot.getRunSummary()
        self.assertGreaterEqual(summary["micrographs_reused"], 1)
        self.assertEqual(summary["micrographs_reused"] + summary["micrographs_extracted"],
                         2 * N_MIC_PAIRS)
        self.assertOutputEqualsReference(prot, self.reference, sampling=2.0, flipped=True)

    def exportFiles(self, prot):
        """The export's files and their modification times (ns)."""
        folder = prot._getExtraPath("xmipp")
        return {name: os.stat(os.path.join(folder, name)).st_mtime_ns
                for name in sorted(os.listdir(folder))}

    def test_continue_after_a_changed_workers_setting(self):
        prot = self.newExtraction("workers 2, then 1", workers=2)
        self.setCTFs(prot)
        self.launchProtocol(prot)
        exported = self.exportFiles(prot)
        # Only a Dask setting changes: Continue resumes the extraction (all done) and leaves
        # the export and the output as they are.
        prot.workers.set(1)
        self.launchProtocol(prot)
        self.assertEqual(prot.getStatus(), STATUS_FINISHED)
        summary = prot.getRunSummary()
        self.assertEqual((summary["micrographs_extracted"], summary["micrographs_reused"]),
                         (0, 2 * N_MIC_PAIRS))
        self.assertEqual(self.exportFiles(prot), exported)
        self.assertIn("--workers 1", open(prot._getExtraPath("pairextract", "note.txt"))
                      .read().split("==== pairextract extract")[-1])
        self.assertOutputEqualsReference(prot, self.reference, sampling=2.0, flipped=True)

    def test_continue_after_a_failed_export(self):
        prot = self.newExtraction("export failed, then continued")
        self.setCTFs(prot)
        self.proj.saveProtocol(prot)  # its folder is known from now on
        # A file the export must not replace (not pairextract's) makes the export step fail.
        foreign = prot._getExtraPath("xmipp", "images_tilted.xmd")
        os.makedirs(os.path.dirname(foreign))
        with open(foreign, "w") as f:
            f.write("# mine\n")
        with self.assertRaisesRegex(Exception, "execution failed"):
            self.launchProtocol(prot)
        self.assertEqual(prot.getStatus(), STATUS_FAILED)
        self.assertIn("not written by pairextract", prot.getErrorMessage())
        with open(foreign) as f:
            self.assertEqual(f.read(), "# mine\n")
        os.remove(foreign)  # the user moves it away; Continue exports and registers the output
        self.launchProtocol(prot)
        self.assertEqual(prot.getStatus(), STATUS_FINISHED)
        # the extraction finished in the failed run: Continue does not run it again
        self.assertEqual(prot.getRunSummary()["micrographs_extracted"], 2 * N_MIC_PAIRS)
        self.assertOutputEqualsReference(prot, self.reference, sampling=2.0, flipped=True)
        # An option that changes the pair index reruns the export into the protocol's own
        # export, which it replaces (pairextract export --force).
        prot.residualThreshold.set(50.0)
        self.launchProtocol(prot)
        self.assertEqual(prot.getStatus(), STATUS_FINISHED)
        self.assertOutputEqualsReference(prot, self.reference, sampling=2.0, flipped=True)

    def test_extract_on_a_running_scheduler(self):
        # A Dask scheduler and worker started outside Scipion (loopback only), given to the
        # protocol by their scheduler file.
        folder = os.path.join(self.outputPath, "dask-cluster")
        os.makedirs(folder, exist_ok=True)
        scheduler_file = os.path.join(folder, "scheduler.json")
        dask = Plugin.getCommand("dask")
        commands = [f"exec {dask} scheduler --scheduler-file {scheduler_file} --host 127.0.0.1 "
                    "--port 0 --dashboard-address 127.0.0.1:0",
                    f"exec {dask} worker --scheduler-file {scheduler_file} --host 127.0.0.1 "
                    "--nworkers 1 --nthreads 1 --no-dashboard"]
        processes = []
        try:
            with open(os.path.join(folder, "dask.log"), "w") as log:
                for command in commands:
                    processes.append(subprocess.Popen(
                        command, shell=True, executable="/bin/bash", cwd=folder,
                        env=Plugin.getEnviron(), stdout=log, stderr=subprocess.STDOUT))
                    deadline = time.time() + 120
                    while not os.path.exists(scheduler_file) and time.time() < deadline:
                        time.sleep(0.1)
            prot = self.newExtraction("running scheduler", clusterType=CLUSTER_ADDRESS,
                                      schedulerAddress=scheduler_file)
            self.setCTFs(prot)
            self.launchProtocol(prot)
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=60)
        self.assertIn(f"--scheduler {scheduler_file}", prot._extractArgs())
        self.assertOutputEqualsReference(prot, self.reference, sampling=2.0, flipped=True)

    def waitFor(self, prot, condition, what, timeout=300):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                return
            self.proj._updateProtocol(prot)
            if not prot.isActive():
                break
            time.sleep(0.5)
        self.printLastLogLines(prot)
        self.fail(f"{what}: not within {timeout} s (status {prot.getStatus()})")

    def test_streaming_input_is_watched_until_closed(self):
        # The same coordinates as a picker streaming them: the protocol follows the open
        # input with pairextract watch, publishes its output open, is stopped and continued
        # half-way, and ends when the input is closed with the output of a batch run.
        streamed = self.newProtocol(
            ProtImportCoordinatesPairs, objLabel="coordinate pairs, streamed",
            importFrom=ProtImportCoordinatesPairs.IMPORT_FROM_XMIPP, xmippMdFn="",
            patternUntilted=os.path.join(self.data, "coords", "u*.pos"),
            patternTilted=os.path.join(self.data, "coords", "t*.pos"), boxSize=BOX)
        streamed.inputMicrographsTiltedPair.set(self.protMics.outputMicrographsTiltPair)
        self.launchProtocol(streamed)
        pairs = streamed.outputCoordinatesTiltPair
        stream = StreamedCoordinates(
            {"u": self.proj.getPath(pairs.getUntilted().getFileName()),
             "t": self.proj.getPath(pairs.getTilted().getFileName())})
        stream.add(2)
        prot = self.newExtraction("streaming input")
        self.setCTFs(prot)
        prot.inputCoordinatesTiltedPairs.set(streamed)
        prot.inputCoordinatesTiltedPairs.setExtended("outputCoordinatesTiltPair")
        self.proj.launchProtocol(prot, wait=False)
        output_db = self.proj.getPath(prot._getPath("particles_pairs.sqlite"))
        # Published while the input is open: the first micrograph pairs' particles, open.
        self.waitFor(prot, lambda: published(output_db)[0] > 0, "first pairs published")
        first, state = published(output_db)
        self.assertEqual(state, Set.STREAM_OPEN)
        self.assertTrue(prot.isActive())
        self.assertIn("watch", open(self.proj.getPath(prot.getLogPaths()[0])).read())
        # Stopped and continued while the input still grows.
        self.proj.stopProtocol(prot)
        self.assertEqual(prot.getStatus(), STATUS_ABORTED)
        stream.add(1)
        self.proj.launchProtocol(prot, wait=False)
        stream.add(N_MIC_PAIRS - stream.given, pause=1.0)
        self.waitFor(prot, lambda: published(output_db)[0] > first, "more pairs published")
        self.assertEqual(published(output_db)[1], Set.STREAM_OPEN)
        stream.close()
        deadline = time.time() + 300
        while prot.isActive() and time.time() < deadline:
            time.sleep(1)
            self.proj._updateProtocol(prot)
        if prot.getStatus() != STATUS_FINISHED:
            self.printLastLogLines(prot)
        self.assertEqual(prot.getStatus(), STATUS_FINISHED)
        output = prot.outputParticlesTiltPair
        self.assertTrue(output.isStreamClosed())
        self.assertEqual(published(output_db)[1], Set.STREAM_CLOSED)
        for view_set in (output.getUntilted(), output.getTilted()):
            self.assertTrue(view_set.isStreamClosed())
            ids = [p.getObjId() for p in view_set]
            self.assertEqual(len(ids), len(set(ids)))  # every pair once
        # The pairs (ids, coordinates, CTFs, images) of the batch run of the final input.
        self.assertOutputEqualsReference(prot, self.reference, sampling=2.0, flipped=True,
                                         coords=pairs)
        parts = sorted(os.listdir(prot._getExtraPath("xmipp")))
        self.assertGreater(len([p for p in parts if p.startswith("part-")]), 1)
        # Continue once the input is closed: the same (streaming) steps, all done; the
        # output stays as published, no batch export beside it.
        self.launchProtocol(prot)
        self.assertEqual(sorted(os.listdir(prot._getExtraPath("xmipp"))), parts)
        self.assertEqual(prot.outputParticlesTiltPair.getSize(), output.getSize())
        self.assertTrue(prot.outputParticlesTiltPair.isStreamClosed())

    def test_pairextract_error_is_the_protocol_error(self):
        # Phase flip where one untilted micrograph has no CTF: pairextract refuses up front.
        partial = self.newProtocol(ProtImportCTF, objLabel="ctf of one micrograph",
                                   importFrom=ProtImportCTF.IMPORT_FROM_XMIPP3,
                                   filesPath=os.path.join(self.data, "ctfs"),
                                   filesPattern="u001.ctfparam")
        partial.inputMicrographs.set(self.protMics)
        partial.inputMicrographs.setExtended("outputMicrographsTiltPair._untilted")
        self.launchProtocol(partial)
        prot = self.newExtraction("missing CTFs")
        prot.ctfUntilt.set(partial.outputCTF)
        with self.assertRaisesRegex(Exception, "execution failed"):
            self.launchProtocol(prot)
        self.assertEqual(prot.getStatus(), STATUS_FAILED)
        self.assertIn("u002", prot.getErrorMessage())
        self.assertIn("CTF", prot.getErrorMessage())

    def test_form_validation_messages(self):
        prot = self.newExtraction("invalid", ctfUntilt=None)
        prot.doFlip.set(True)
        prot.backRadius.set(BOX // 2 + 1)
        errors = prot.validate()
        self.assertIn("Phase flipping cannot be performed unless CTF information is provided.",
                      errors)
        self.assertIn("Background radius for normalization should be equal or less than half "
                      "of the box size.", errors)
        prot = self.newExtraction("invalid factor", downFactor=0.5, boxSize=0)
        errors = "\n".join(prot.validate())
        self.assertIn("Value should be greater or equal than 1.0", errors)
        self.assertIn("Particle box size", errors)
        # The seed's defaults.
        prot = self.newProtocol(ProtPairextractExtractPairs)
        self.assertEqual((prot.downsampleType.get(), prot.downFactor.get(), prot.boxSize.get(),
                          prot.doBorders.get(), prot.doRemoveDust.get(),
                          prot.thresholdDust.get(), bool(prot.doInvert.get()),
                          prot.doFlip.get(), prot.doNormalize.get(), prot.normType.get(),
                          prot.backRadius.get()),
                         (0, 1.0, 0, False, True, 3.5, False, False, True, 2, -1))

    def test_command_line_of_the_form(self):
        prot = self.newExtraction("options", downFactor=1.5, doBorders=True, doRemoveDust=False,
                                  doInvert=False, doFlip=False, doNormalize=False,
                                  useFloat16=True, residualThreshold=7.5, dropFlagged=True,
                                  clusterType=CLUSTER_SLURM, workers=4, slurmJobs=3)
        args = prot._extractArgs().split()
        self.assertEqual(args[0], os.path.abspath(prot._getExtraPath("inputs", "pairs.csv")))
        for option in (["--box", str(BOX)], ["--downsample", "1.5"], ["--fill-borders"],
                       ["--no-dust"], ["--norm", "none"], ["--float16"],
                       ["--residual-threshold", "7.5"], ["--drop-flagged"],
                       ["--cluster", "slurm", "--workers", "4", "--jobs", "3"]):
            k = args.index(option[0])
            self.assertEqual(args[k:k + len(option)], option)
        for absent in ("--invert", "--phase-flip", "--ctf-untilted", "--dust-threshold"):
            self.assertNotIn(absent, args)
        self.assertNotIn("--tilt-defocus", args)
        self.assertEqual(prot._extractArgs(), f"{prot._protocolArgs()} {prot._clusterArgs()}")
        for cluster_option in ("--cluster", "--workers", "--jobs", "--scheduler", "--no-progress"):
            self.assertNotIn(cluster_option, prot._protocolArgs().split())
        prot = self.newExtraction("scheduler", clusterType=CLUSTER_ADDRESS,
                                  schedulerAddress="tcp://127.0.0.1:8786",
                                  tiltAwareFlip=True, tiltSign=1)
        self.setCTFs(prot)
        args = prot._extractArgs().split()
        self.assertEqual(args[-2:], ["--scheduler", "tcp://127.0.0.1:8786"])
        self.assertNotIn("--workers", args)
        for option in (["--invert"], ["--phase-flip"], ["--norm", "Ramp", "--bg-radius", "-1"],
                       ["--dust-threshold", "3.5"], ["--ctf-tilted"],
                       ["--tilt-defocus", "geometry", "--tilt-sign", "-1"]):
            k = args.index(option[0])
            self.assertEqual(args[k:k + len(option)], option)
        self.assertEqual(self.newExtraction("no address", clusterType=CLUSTER_ADDRESS)
                         .validate()[-1:],
                         ["Run on 'scheduler address' needs the scheduler's address or file."])
