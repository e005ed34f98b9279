"""Damaged recordings through ``echojax predict``: each one segmented or failed cleanly.

    python bench/predict_fuzz.py [--model MODEL_DIR] [--flips 5] [--real_videos 5]
        [--timeout 600] [--work DIR]

Makes inputs from sources written here (a phantom cine loop as AVI, MP4, uncompressed,
JPEG and RLE DICOM, NIfTI ``.nii``/``.nii.gz`` and a PNG frame) and from real files where
present (the shared EchoNet-Dynamic videos in ``../shared/real_samples/``, read in place
and never copied into the repository; pydicom's ultrasound and 16-bit test DICOMs),
each: whole, cut to 10 % and 50 % of its bytes, bits flipped in its header and in its
data (``--flips`` seeds each), its header zeroed, emptied, and under another format's
suffix. All of them go through one ``echojax predict`` call over their folder
(time-bounded), and :func:`check` verifies: the process ends (no hang, no crash: status 0
or 1), no traceback, every stderr line is an ``error:`` or ``warning:`` line naming its
file, every failed input has exactly one ``error:`` line, ``summary.csv`` lists every
input once, every segmented input has all its output files and nothing else is in the
output folder (no half-written folder). Prints the counts: inputs tried, segmented (of
them flagged truncated), failed cleanly, problems.

``tests/test_predict_fuzz.py`` runs a bounded version (one flip seed, one real video).
Without ``--model``, a model of initialised weights is made (the checks are about the
input, not the masks).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL_VIDEOS = REPO.parent / "shared" / "real_samples" / "echonet_dynamic" / "Videos"
PYDICOM_FILES = ("examples_ybr_color.dcm", "examples_palette.dcm", "examples_rgb_color.dcm",
                 "SC_rgb_rle.dcm", "MR_small.dcm")
HEAD = 512  # bytes treated as a file's header
OUTPUT_FILES = ("areas.csv", "beats.csv", "overlay.gif", "overlay.png", "area_curve.png",
                "result.json")
# A mislabelled copy takes the suffix of another kind of file.
WRONG_SUFFIX = {".avi": ".dcm", ".mp4": ".nii", ".dcm": ".avi", ".nii.gz": ".png",
                ".nii": ".mp4", ".png": ".nii.gz"}


def _suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()


# --- sources ------------------------------------------------------------------------------


def _jpeg_dicom(src: Path, out: Path) -> Path:
    """``src`` (an uncompressed 8-bit grey cine) as JPEG baseline DICOM, one fragment per
    frame, as most ultrasound scanners store cines."""
    import pydicom
    import pydicom.encaps
    from PIL import Image
    ds = pydicom.dcmread(src)
    frames = []
    for frame in ds.pixel_array.reshape((-1,) + ds.pixel_array.shape[-2:]):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=90)
        frames.append(buf.getvalue())
    ds.PixelData = pydicom.encaps.encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.save_as(out)
    return out


def write_sources(folder: Path, *, real_videos: int = 1, pydicom_files=PYDICOM_FILES,
                  frames: int = 24) -> list[Path]:
    """The undamaged sources: phantom files written into ``folder``, and real files (the
    shared EchoNet videos and pydicom's test files, where present) named in place."""
    import cv2
    import pydicom
    import pydicom.data
    import SimpleITK as sitk

    from echojax import phantoms
    folder.mkdir(parents=True, exist_ok=True)
    loop = phantoms.render_cine("camus_like", 1, "4CH", shape=(40, 56), num_frames=frames,
                                frames_per_beat=12, fps=20.0)
    out = [phantoms.write_video(loop, folder / "phantom.avi"),
           phantoms.write_video(loop, folder / "phantom.mp4"),
           phantoms.write_dicom(loop, folder / "phantom.dcm")]
    out.append(_jpeg_dicom(out[-1], folder / "phantom_jpeg.dcm"))
    ds = pydicom.dcmread(out[2])
    ds.compress(pydicom.uid.RLELossless)
    ds.save_as(folder / "phantom_rle.dcm")
    out.append(folder / "phantom_rle.dcm")
    image = sitk.GetImageFromArray(loop.frames)
    image.SetSpacing((0.3, 0.3, 50.0))
    for name in ("phantom_gz.nii.gz", "phantom.nii"):  # distinct stems: see recordings
        sitk.WriteImage(image, str(folder / name))
        out.append(folder / name)
    cv2.imwrite(str(folder / "phantom.png"), loop.frames[0])
    out.append(folder / "phantom.png")
    if REAL_VIDEOS.is_dir():
        out += sorted(REAL_VIDEOS.glob("*.avi"), key=lambda p: p.stat().st_size)[:real_videos]
    for name in pydicom_files:
        path = pydicom.data.get_testdata_file(name, download=False)
        if path is not None:
            out.append(Path(path))
    return out


# --- damage -------------------------------------------------------------------------------


def mutations(data: bytes, suffix: str, *, flips: int = 1,
              seed: int = 0) -> dict[str, tuple[bytes, str]]:
    """``name -> (bytes, suffix)``: the ways one file is damaged (see the module doc)."""
    rng = np.random.default_rng(seed)
    n = len(data)
    out = {"whole": (data, suffix), "cut10": (data[: n // 10], suffix),
           "cut50": (data[: n // 2], suffix),
           "zerohead": (bytes(min(HEAD, n)) + data[HEAD:], suffix),
           "empty": (b"", suffix),
           "mislabelled": (data, WRONG_SUFFIX.get(suffix, ".avi"))}
    for k in range(flips):
        for part, lo, hi, count in (("head", 0, min(HEAD, n), 8), ("data", min(HEAD, n), n, 32)):
            if hi <= lo:
                continue
            flipped = bytearray(data)
            for at in rng.integers(lo, hi, count):
                flipped[at] ^= 1 << int(rng.integers(0, 8))
            out[f"flip{part}{k}"] = (bytes(flipped), suffix)
    return out


def write_inputs(sources: list[Path], folder: Path, *, flips: int = 1) -> list[Path]:
    """Every damaged version of every source, in ``folder`` (flat, distinct names)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, src in enumerate(sources):
        suffix = _suffix(src)
        stem = src.name[: len(src.name) - len(suffix)]
        data = src.read_bytes()
        for name, (content, new_suffix) in mutations(data, suffix, flips=flips, seed=i).items():
            path = folder / f"{stem}__{name}{new_suffix}"
            path.write_bytes(content)
            written.append(path)
    return written


# --- run and check ------------------------------------------------------------------------


def run_predict(model: str | os.PathLike, inputs: Path, out: Path, *,
                timeout: float) -> subprocess.CompletedProcess:
    """``echojax predict --model MODEL INPUTS --out OUT`` in its own process. Raises
    ``subprocess.TimeoutExpired`` past ``timeout`` seconds (a hang)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return subprocess.run([sys.executable, "-m", "echojax", "predict", "--model", str(model),
                           str(inputs), "--out", str(out), "--no_progress"], env=env,
                          capture_output=True, text=True, errors="replace", timeout=timeout)


def check(inputs: list[Path], out: Path, proc: subprocess.CompletedProcess) -> dict:
    """The counts and the problems of one predict run over ``inputs`` (module doc)."""
    problems = []
    if proc.returncode not in (0, 1):
        problems.append(f"exit status {proc.returncode}")
    if "Traceback" in proc.stderr:
        problems.append("a traceback on stderr: " + proc.stderr[proc.stderr.index("Traceback"):][:800])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    for line in lines:
        if not (line.startswith("error: ") or line.startswith("warning: ")) or \
                not any(str(p) in line for p in inputs):
            problems.append(f"a stderr line naming no input: {line[:300]}")
    summary = out / "summary.csv"
    if not summary.is_file():
        problems.append("no summary.csv")
        return {"tried": len(inputs), "ok": 0, "truncated": 0, "failed": 0, "problems": problems}
    with open(summary, newline="") as f:
        rows = list(csv.DictReader(f))
    listed = [r["input"] for r in rows]
    missing = sorted(set(map(str, inputs)) - set(listed))
    if missing or len(listed) != len(set(listed)):
        problems.append(f"summary.csv misses {missing[:5]} or lists an input twice")
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed:
        name = Path(r["input"]).name
        if not r["error"] or name not in r["error"] or "\n" in r["error"]:
            problems.append(f"{name}: error not one line naming the file: {r['error'][:200]!r}")
        said = [line for line in lines if line.startswith(f"error: {r['input']}: ")]
        if len(said) != 1:
            problems.append(f"{name}: {len(said)} error lines on stderr")
    for r in ok:
        folder = out / r["output"]
        with open(folder / "result.json") as f:
            result = json.load(f)
        for file in OUTPUT_FILES + (result["masks_file"],):
            if not (folder / file).is_file() or (folder / file).stat().st_size == 0:
                problems.append(f"{r['input']}: {file} missing or empty")
        if r["warning"] and not any(line.startswith(f"warning: {r['input']}: ") for line in lines):
            problems.append(f"{r['input']}: flagged in the summary, not on the terminal")
    expected = {r["output"] for r in ok} | {"summary.csv", "summary.json"}
    extra = sorted(set(os.listdir(out)) - expected)
    if extra:
        problems.append(f"left in the output folder: {extra[:5]}")
    return {"tried": len(inputs), "ok": len(ok), "truncated": sum(bool(r["warning"]) for r in ok),
            "failed": len(failed), "problems": problems,
            "by_kind": _by_kind(rows)}


def _by_kind(rows) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for r in rows:
        name = Path(r["input"]).name.split("__")[-1]
        kind = name[: len(name) - len(_suffix(Path(name)))].rstrip("0123456789")
        status = "truncated" if r["status"] == "ok" and r["warning"] else r["status"]
        table.setdefault(kind, {}).setdefault(status, 0)
        table[kind][status] += 1
    return table


def initialised_model(folder: Path) -> Path:
    """An exported model folder of a tiny U-Net with initialised weights."""
    import jax

    from echojax import export, rundir, train
    from echojax.checkpoint import Checkpoints
    from echojax.config import Config, LossConfig, ModelConfig, Source
    config = Config(sources=(Source("synthetic_echo/camus_like_64", alias="camus"),),
                    resolution=32, loss=LossConfig(name="acce"),
                    model=ModelConfig(name="unet", size="tiny", overrides={"widths": (4, 8)}),
                    batch_size=4, eval_batch_size=8, epochs=1, seed=0)
    run = rundir.RunDir(str(folder / "run"))
    os.makedirs(run.path, exist_ok=True)
    run.save_config(config)
    rundir.record_environment(run)
    state = jax.device_get(train.make_init(config)(jax.random.key_data(jax.random.key(0))))
    checkpoints = Checkpoints(run.checkpoints)
    try:
        checkpoints.save(1, dict(state, step=jax.numpy.int32(1)), None, val_fg_dice=0.5)
    finally:
        checkpoints.close()
    with open(run.metrics, "w") as f:
        f.write(json.dumps({"step": 1, "epoch": 1, "validation/fg_dice": 0.5}) + "\n")
    return Path(export.export(run.path, str(folder / "model")))


def fuzz(model, work: Path, *, flips: int, real_videos: int, timeout: float,
         pydicom_files=PYDICOM_FILES) -> dict:
    """Writes the sources and inputs under ``work``, runs predict once, checks it."""
    sources = write_sources(work / "sources", real_videos=real_videos,
                            pydicom_files=pydicom_files)
    inputs = write_inputs(sources, work / "inputs", flips=flips)
    t0 = time.perf_counter()
    try:
        proc = run_predict(model, work / "inputs", work / "out", timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"tried": len(inputs), "ok": 0, "truncated": 0, "failed": 0,
                "problems": [f"predict did not finish in {timeout:g} s (a hang?)"],
                "sources": [str(s) for s in sources]}
    result = check(inputs, work / "out", proc)
    result.update(seconds=time.perf_counter() - t0, sources=[str(s) for s in sources],
                  returncode=proc.returncode)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="exported model folder (default: "
                        "an initialised tiny U-Net)")
    parser.add_argument("--flips", type=int, default=5, help="bit-flip seeds per source")
    parser.add_argument("--real_videos", type=int, default=5,
                        help="shared EchoNet videos used (where present)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for predict")
    parser.add_argument("--work", default=None, help="keep everything here (default: a "
                        "temporary folder, removed)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="echojax-fuzz-") as tmp:
        work = Path(args.work or tmp)
        model = args.model or initialised_model(work / "model")
        result = fuzz(model, work, flips=args.flips, real_videos=args.real_videos,
                      timeout=args.timeout)
    print(f"sources: {len(result['sources'])} ({', '.join(Path(s).name for s in result['sources'])})")
    for kind, counts in sorted(result.get("by_kind", {}).items()):
        print(f"  {kind:<12} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"inputs tried {result['tried']}: segmented {result['ok']} (of them flagged "
          f"truncated {result['truncated']}), failed cleanly {result['failed']}; "
          f"{len(result['problems'])} problem(s)"
          + (f"; predict took {result['seconds']:.0f} s" if "seconds" in result else ""))
    for p in result["problems"]:
        print(f"problem: {p}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
