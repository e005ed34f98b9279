"""Frames per second of ``echojax.predict`` on this machine's CPU.

    python bench/predict_throughput.py [--resolutions 64 128] [--shapes 112x112 480x640]
        [--frames 100] [--batch 16]

The quick model's architecture (U-Net, ``cpu`` size, aCCE's decision rule) with
initialised weights (speed does not depend on the weights), at each model resolution,
on a phantom cine loop of each recording size written as an AVI. Per case:

- ``compile``: the predictor's first call (one compiled shape per resolution and batch);
- ``model``: frames/s of the predictor alone on frames already at the model grid;
- ``onnxruntime model``: the same for the model's ONNX graph (``echojax.onnx_export``,
  as ``echojax export --onnx`` writes it) run by onnxruntime on the CPU
  (``predict --runtime onnx``); ``onnxruntime segment``: ``segment`` with it. Left out
  (``-``) without the onnx extra (``pip install 'echojax[onnx]'``);
- ``segment``: frames/s of reading, sector handling, resizing, the model, mapping masks
  back and the LV areas (``predict.segment_recording``);
- ``end to end``: the above plus every output file (``predict.run`` on one recording:
  masks NIfTI, CSVs, overlay GIF and PNG, area-curve plot).

Medians of ``--repeats`` runs after one warm-up. The 1-minute load average is printed:
on a shared machine the numbers are lower bounds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from echojax import export, files, inference, onnx_export, phantoms, predict, train
from echojax.config import Config, LossConfig, ModelConfig, Source


class InitialisedSegmenter:
    def __init__(self, resolution: int, batch: int):
        config = Config(sources=(Source("synthetic_echo/camus_like_64", alias="camus"),),
                        resolution=resolution, model=ModelConfig(name="unet", size="cpu"),
                        loss=LossConfig(name="acce"), eval_batch_size=batch)
        state = jax.device_get(jax.jit(train.make_init(config))(
            jax.random.key_data(jax.random.key(0))))
        self.model = inference.Model(config=config, params=state["params"], rest=state["rest"],
                                     step=0, path="(initialised)")
        self.resolution, self.spec = resolution, export.preprocessing_spec(config)
        self.predictor = self.model.predictor()

    def __call__(self, images):
        return self.predictor(images)

    def describe(self):
        return {"path": self.model.path, "resolution": self.resolution}


class OnnxSegmenter:
    """The same model as an ONNX graph in a minimal model folder, run by onnxruntime."""

    def __init__(self, seg: InitialisedSegmenter, folder: Path, batch: int):
        folder.mkdir()
        seg.model.config.save(folder / "config.json")
        entry = onnx_export.write(seg.model, folder / onnx_export.FILE)
        files.write_json(folder / inference.MODEL_FILE,
                         {"preprocessing": seg.spec, "step": 0, "onnx": entry})
        self.predictor = onnx_export.OnnxPredictor(folder, batch_size=batch)
        self.resolution, self.spec = seg.resolution, seg.spec

    def __call__(self, images):
        return self.predictor(images)

    def describe(self):
        return {"path": self.predictor.path, "resolution": self.resolution}


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    p.add_argument("--shapes", nargs="+", default=["112x112", "480x640"])
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    ort = None if onnx_export.missing() else __import__("onnxruntime").__version__
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs, "
          f"onnxruntime {ort or '(not installed)'}, batch {args.batch}, {args.frames}-frame "
          f"loops, median of {args.repeats}")
    print("| model input | recording | compile s | model frames/s | onnxruntime model frames/s "
          "| segment frames/s | onnxruntime segment frames/s | end to end frames/s | load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        for shape in args.shapes:
            h, w = (int(v) for v in shape.split("x"))
            loop = phantoms.render_cine("echonet_like", 9, "4CH", shape=(h, w),
                                        num_frames=args.frames, frames_per_beat=40)
            videos[shape] = phantoms.write_video(loop, Path(tmp) / f"loop_{shape}.avi")
        for r in args.resolutions:
            seg = InitialisedSegmenter(r, args.batch)
            grid = np.random.default_rng(0).integers(0, 256, (args.frames, r, r, 1), np.uint8)
            t = time.perf_counter()
            seg(grid[:1])
            compile_s = time.perf_counter() - t
            onnx_seg = OnnxSegmenter(seg, Path(tmp) / f"model_{r}", args.batch) if ort else None
            load0 = os.getloadavg()[0]
            model_s = _median_time(lambda seg=seg, grid=grid: seg(grid), args.repeats)
            onnx_model = "-"
            if onnx_seg:
                onnx_seg(grid[:1])  # warm-up
                onnx_s = _median_time(lambda o=onnx_seg, grid=grid: o(grid), args.repeats)
                onnx_model = f"{args.frames / onnx_s:.0f}"
            for shape, video in videos.items():
                predict.segment_recording(video, seg)  # warm-up
                seg_s = _median_time(lambda v=video, s=seg: predict.segment_recording(v, s),
                                     args.repeats)
                onnx_segment = "-"
                if onnx_seg:
                    predict.segment_recording(video, onnx_seg)
                    onnx_seg_s = _median_time(
                        lambda v=video, s=onnx_seg: predict.segment_recording(v, s), args.repeats)
                    onnx_segment = f"{args.frames / onnx_seg_s:.0f}"
                out = Path(tmp) / f"out_{r}_{shape}"
                e2e_s = _median_time(lambda v=video, s=seg, o=out: predict.run(
                    s, [str(v)], str(o), progress=False), args.repeats)
                n = args.frames
                print(f"| {r}x{r} | {shape} | {compile_s:.1f} | {n / model_s:.0f} | {onnx_model} | "
                      f"{n / seg_s:.0f} | {onnx_segment} | {n / e2e_s:.0f} | "
                      f"{load0:.1f}-{os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
