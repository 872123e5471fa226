"""CPU inference engines for the featurizer, and end-to-end scoring throughput.

Part 1 (``--part featurizer``): images/s of ``PatchFeaturizer``'s forward pass
(backbone stages + local aggregation + upsampling + channel pooling) at 224 px
for EfficientNet-Lite0 and wide_resnet50_2 (random weights: same compute)
with each engine: eager torch (NCHW), eager + channels_last (what
``PatchFeaturizer(engine="torch")`` runs), ``torch.compile``,
onnxruntime and OpenVINO (the last two run the graph that ``skpatch._onnx``
exports). For each: achieved GFLOP/s (backbone FLOPs counted by
``torch.utils.flop_counter.FlopCounterMode``) against a measured float32
matmul peak, the speed-up over eager, and the largest feature difference
relative to the largest eager feature.

Part 2 (``--part scoring``): images/s of the default ``SoftPatchClassifier``'s
``score_samples`` on ``--n-score`` 256 px PNG files (MVTec AD bottle test
images, cycled, when the folder exists; else synthetic images written to a
temporary folder), end to end, with each featurizer engine plugged into the
fitted model, the time spent per stage (decode, uint8 -> float, resize, CNN,
feature pooling, nearest-neighbour search, other), and the exported ONNX
graph (search by brute force inside the graph) run by onnxruntime.

Part 3 (``--part fit``): a default classifier's fit on ``--n-fit`` (200)
training files with ``featurizer__engine="torch"`` and ``"onnxruntime"``:
the time inside the backbone and the non-backbone rest.

Run from the repository root (the timings are only meaningful on a quiet
machine)::

    python benchmarks/engines.py                          # all three parts
    python benchmarks/engines.py --part featurizer --engines eager channels_last onnxruntime
    python benchmarks/engines.py --part scoring --n-score 1000

Prints Markdown tables; ``--output FILE`` also writes them to a file.
"""

import argparse
import copy
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BOTTLE = os.path.join(ROOT, os.pardir, "shared", "data", "mvtec_ad_bottle")
ENGINES = ("default", "eager", "channels_last", "compile", "onnxruntime", "openvino")
BACKBONES = ("tf_efficientnet_lite0", "wide_resnet50_2")


def _clock():
    return time.perf_counter()


def warm_imports():
    """Import what a fit imports lazily (timm alone takes seconds in a fresh
    process), so that the first timed engine does not pay for it."""
    import importlib

    for name in ("timm", "torchvision", "onnxruntime", "onnx"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


# -- engines ----------------------------------------------------------------


def make_engine(name, featurizer, threads, workdir):
    """A drop-in for ``featurizer._embed``: (b, 3, H, W) float tensor in [0, 1] -> (b, h * w, d).

    The engines other than eager run from the resized batch (the resize stays
    torch's, as in ``_embed``). Returns ``(engine, setup_seconds)``; an engine
    that calls a featurizer's ``_maps`` exposes it as ``engine.featurizer``.
    """
    start = _clock()
    if name == "eager":
        # Eager torch in the NCHW layout (PatchFeaturizer's torch engine before
        # it moved to channels_last): the baseline.
        clone = copy.deepcopy(featurizer)
        clone.backbone_ = clone.backbone_.to(memory_format=torch.contiguous_format)
        mean, std = torch.tensor(clone.mean_).view(1, 3, 1, 1), torch.tensor(clone.std_).view(1, 3, 1, 1)
        clone._maps = lambda batch, model: model.forward_intermediates(
            ((batch - mean) / std).contiguous(), indices=list(clone.stages_), intermediates_only=True
        )

        def eager(batch):
            return clone._embedding().pool(clone._maps(batch, clone.backbone_))

        engine = _resizing(clone, eager)
        engine.featurizer = clone
    elif name == "channels_last":
        # PatchFeaturizer(engine="torch") as it is: channels_last. Its
        # _maps (looked up on the instance, so that the CNN is timed) and
        # pooling, whatever the fitted model's engine.
        def torch_engine(batch):
            return featurizer._embedding().pool(featurizer._maps(batch, featurizer.backbone_))

        engine = _resizing(featurizer, torch_engine)
    elif name == "default":
        # The fitted model's own _embed: engine="auto", onnxruntime where it
        # is installed (score_with_stages times it without replacing it).
        engine = None
    elif name == "compile":
        compiled = torch.compile(featurizer._embedding(input_size=featurizer._image_size()).eval())
        with torch.inference_mode():
            compiled(torch.zeros((featurizer.batch_size, 3, *featurizer._image_size())))
        engine = _resizing(featurizer, compiled)
    elif name == "onnxruntime":
        # What PatchFeaturizer(engine="onnxruntime") runs.
        from skpatch._embedding import INPUT_NAME, feature_session

        session = feature_session(featurizer._embedding(input_size=featurizer._image_size()), threads)
        engine = _resizing(featurizer, lambda b: torch.from_numpy(session.run(None, {INPUT_NAME: b.numpy()})[0]))
    elif name == "openvino":
        engine = _resizing(featurizer, _openvino_engine(_export_features(featurizer, workdir), threads))
    else:
        raise ValueError(f"unknown engine {name!r}; choose from {ENGINES}")
    return engine, _clock() - start


def _resizing(featurizer, core):
    """``core`` behind the resize of ``PatchFeaturizer._embed``."""
    import skpatch._featurizer as featurizer_module

    size = featurizer._image_size()

    def engine(batch):
        if tuple(batch.shape[-2:]) != size:
            batch = featurizer_module.F.interpolate(
                batch, size=size, mode="bilinear", align_corners=False, antialias=True
            )
        return core(batch)

    return engine


def _export_features(featurizer, workdir):
    from skpatch._embedding import export_module

    graph = featurizer._embedding(input_size=featurizer._image_size()).eval()
    example = torch.zeros((2, 3, *featurizer._image_size()))
    path = os.path.join(workdir, f"features_{featurizer.backbone}.onnx")
    with open(path, "wb") as handle:
        handle.write(export_module(graph, example, ["features"]))
    return path


def _openvino_engine(path, threads):
    import openvino as ov

    core = ov.Core()
    # The CPU plugin would run bf16 on CPUs with AMX unless told otherwise.
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    compiled = core.compile_model(core.read_model(path), "CPU", config)

    def engine(batch):
        return torch.from_numpy(np.asarray(compiled(batch.numpy())[0]))

    return engine


# -- part 1: featurizer engines ----------------------------------------------


def matmul_peak(threads, n=2048, repeats=10):
    """Best float32 GFLOP/s of an n x n matmul on ``threads`` threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = np.inf
    for _ in range(repeats):
        start = _clock()
        torch.mm(a, b)
        best = min(best, _clock() - start)
    return 2 * n**3 / best / 1e9


def backbone_gflops(featurizer):
    """Backbone FLOPs (up to the used stages) per image, in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        featurizer._maps(torch.zeros((1, 3, *featurizer._image_size())), featurizer.backbone_)
    return counter.get_total_flops() / 1e9


def time_engine(engine, batches, repeats):
    """Best seconds over ``repeats`` passes, and the features of the last pass."""
    best = np.inf
    with torch.inference_mode():
        engine(batches[0])  # warm-up
        for _ in range(repeats):
            start = _clock()
            outs = [engine(batch) for batch in batches]
            best = min(best, _clock() - start)
    return best, torch.cat(outs).numpy()


def featurizer_table(args, workdir):
    from skpatch import PatchFeaturizer

    torch.set_num_threads(args.threads)
    peak = matmul_peak(args.threads)
    lines = [
        f"Featurizer at 224 px, batch 16, {args.threads} threads; float32 matmul peak "
        f"(2048^3, best of 10): **{peak:.0f} GFLOP/s**.",
        "",
        "| backbone | engine | images | ms/image | images/s | GFLOP/image | GFLOP/s | % of peak | vs eager | max rel diff | setup s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for backbone in args.backbones:
        n_images = args.n_images if "lite" in backbone else max(16, args.n_images // 2)
        images = rng.random((n_images, 3, 224, 224), dtype=np.float32)
        featurizer = PatchFeaturizer(backbone, weights=None).fit(np.zeros((1, 224, 224, 3), np.uint8))
        gflop = backbone_gflops(featurizer)
        batches = list(torch.from_numpy(images).split(featurizer.batch_size))
        reference = eager_seconds = None
        for name in args.engines:
            try:
                engine, setup = make_engine(name, featurizer, args.threads, workdir)
                if engine is None:  # the featurizer's own (engine="auto")
                    engine = lambda batch, f=featurizer: f._embed(batch, f.backbone_)  # noqa: E731
                seconds, feats = time_engine(engine, batches, args.repeats)
            except Exception as exc:  # an engine that does not install or run is reported
                lines.append(f"| {backbone} | {name} | failed: {type(exc).__name__}: {str(exc)[:80]} |")
                continue
            if reference is None:
                reference, eager_seconds = feats, seconds
            diff = np.abs(feats - reference).max() / np.abs(reference).max()
            per_image = seconds / n_images
            rate = gflop / per_image
            lines.append(
                f"| {backbone} | {name} | {n_images} | {1e3 * per_image:.1f} | {1 / per_image:.1f} | "
                f"{gflop:.2f} | {rate:.0f} | {100 * rate / peak:.0f}% | {eager_seconds / seconds:.2f}x | "
                f"{diff:.1e} | {setup:.1f} |"
            )
            print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", "`vs eager` is the first engine listed; `max rel diff` = max |features - first engine's| / max |first engine's features|."]
    return lines


# -- part 2: end-to-end scoring ------------------------------------------------


def scoring_files(n_score, workdir):
    """(train paths, test paths cycled to n_score, source)."""
    if os.path.isdir(BOTTLE):
        from skpatch.datasets import load_mvtec

        data = load_mvtec(BOTTLE)
        test = [data.test_images[i % len(data.test_images)] for i in range(n_score)]
        return list(data.train_images), test, "MVTec AD bottle (test images cycled)"
    from PIL import Image

    from skpatch.datasets import make_defects

    train, _, _ = make_defects(200, image_size=256, kind="object", defect_ratio=0.0, random_state=0)
    test, _, _ = make_defects(100, image_size=256, kind="object", defect_ratio=0.5, random_state=1)
    paths = []
    for name, images in (("train", train), ("test", test)):
        for i, image in enumerate(images):
            path = os.path.join(workdir, f"{name}_{i:04d}.png")
            Image.fromarray(image).save(path)
            paths.append(path)
    return paths[:200], [paths[200 + i % 100] for i in range(n_score)], "synthetic 256 px PNG files"


class _Timers:
    """Accumulates the seconds spent in wrapped functions, by stage.

    Each stage gets its own (exclusive) time: a timed call made inside
    another one on the same thread is taken out of the outer one's time, so
    that the main thread's stages add up to at most its wall time. Calls on
    other threads (the decoding ahead of ``PatchFeaturizer.transform``) overlap
    the main thread's work; they are kept apart, as ``"<stage> (threads)"``.
    """

    def __init__(self):
        import threading

        self.seconds = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self._main = threading.main_thread()

    def wrap(self, stage, function, when=None):
        import threading

        def wrapped(*args, **kwargs):
            if when is not None and not when(*args, **kwargs):
                return function(*args, **kwargs)
            stack = self._local.__dict__.setdefault("stack", [])
            stack.append(0.0)  # seconds of the timed calls nested in this one
            start = _clock()
            try:
                return function(*args, **kwargs)
            finally:
                elapsed = _clock() - start
                nested = stack.pop()
                if stack:
                    stack[-1] += elapsed
                key = stage if threading.current_thread() is self._main else f"{stage} (threads)"
                with self._lock:
                    self.seconds[key] = self.seconds.get(key, 0.0) + elapsed - nested

        return wrapped

    def wrap_iterator(self, stage, make_iterator):
        """``make_iterator`` whose iterators time each ``next()`` as ``stage``."""
        timed_next = self.wrap(stage, next)

        def wrapped(*args, **kwargs):
            iterator = iter(make_iterator(*args, **kwargs))
            try:
                while True:
                    try:
                        item = timed_next(iterator)
                    except StopIteration:
                        return
                    yield item
            finally:
                getattr(iterator, "close", lambda: None)()  # stops its decoding threads

        return wrapped


def score_with_stages(clf, paths, engine):
    """``clf.score_samples(paths)`` with ``engine`` as the featurizer's ``_embed``.

    Returns the scores, the seconds and the seconds per stage, measured by
    wrapping the functions of the real code path. The main thread's stages
    and ``other`` add up to the total; the ``(threads)`` stages ran in the
    decoding threads, at the same time as the main thread's.
    """
    import types

    import skpatch._featurizer as featurizer_module
    import skpatch._images as images_module

    timers = _Timers()
    featurizer, coreset = clf.pipeline_[0], clf.pipeline_[-1]
    cnn_owner = getattr(engine, "featurizer", featurizer)
    saved = (
        images_module._load_item, images_module._to_float_rgb, featurizer_module.F,
        featurizer_module.prefetch_map,
    )
    images_module._load_item = timers.wrap("decode", saved[0])
    images_module._to_float_rgb = timers.wrap("uint8 -> float", saved[1])
    # The main thread's wait for the next decoded batch (all of the decoding
    # when it is not done ahead).
    featurizer_module.prefetch_map = timers.wrap_iterator("decode wait", saved[3])
    functional = types.SimpleNamespace(**vars(torch.nn.functional))
    functional.interpolate = timers.wrap(
        "resize", torch.nn.functional.interpolate, when=lambda *a, **k: k.get("antialias")
    )
    featurizer_module.F = functional
    own_maps = cnn_owner.__dict__.get("_maps")
    cnn_owner._maps = timers.wrap("CNN", cnn_owner._maps)
    # transform calls _embed(batch, model); the engines take the batch only.
    if engine is None:  # the model's own
        featurizer._embed = timers.wrap("embed", featurizer._embed)
    else:
        featurizer._embed = timers.wrap("embed", lambda batch, model: engine(batch))
    coreset.score_samples = timers.wrap("search", coreset.score_samples)
    searches = ["score_samples"]
    if hasattr(coreset, "min_score_samples"):  # the classifier's pruned search
        coreset.min_score_samples = timers.wrap("search", coreset.min_score_samples)
        searches.append("min_score_samples")
    try:
        start = _clock()
        scores = clf.score_samples(paths)
        total = _clock() - start
    finally:
        (
            images_module._load_item, images_module._to_float_rgb, featurizer_module.F,
            featurizer_module.prefetch_map,
        ) = saved
        del featurizer._embed
        for name in searches:
            delattr(coreset, name)
        if own_maps is None:
            del cnn_owner._maps
        else:
            cnn_owner._maps = own_maps
    stages = dict(timers.seconds)
    # "embed" is what the engine spends outside the resize and the CNN.
    embed = stages.pop("embed")
    stages["pooling" if "CNN" in stages else "CNN + pooling (engine)"] = embed
    stages["other"] = total - sum(v for k, v in stages.items() if not k.endswith("(threads)"))
    return scores, total, stages


def onnx_graph_scores(clf, paths, threads, workdir, batch_size=16):
    """Scores from the whole exported graph under onnxruntime, from PNG files."""
    import onnxruntime as ort
    from PIL import Image

    path = os.path.join(workdir, "classifier.onnx")
    start = _clock()
    clf.export_onnx(path)
    export_seconds = _clock() - start
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    decode = run = 0.0
    out = []
    start = _clock()
    for lo in range(0, len(paths), batch_size):
        t0 = _clock()
        batch = []
        for name in paths[lo : lo + batch_size]:
            with Image.open(name) as image:
                batch.append(np.asarray(image.convert("RGB")))
        batch = np.stack(batch)
        t1 = _clock()
        out.append(session.run(["scores"], {"images": batch})[0])
        decode, run = decode + t1 - t0, run + _clock() - t1
    total = _clock() - start
    return np.concatenate(out), total, {"decode": decode, "graph (resize, CNN, pooling, brute-force search)": run}, export_seconds


def scoring_table(args, workdir):
    from skpatch import SoftPatchClassifier

    torch.set_num_threads(args.threads)
    train, test, source = scoring_files(args.n_score, workdir)
    start = _clock()
    clf = SoftPatchClassifier(random_state=0).fit(train)
    fit_seconds = _clock() - start
    featurizer = clf.pipeline_[0]
    bank = clf.pipeline_[-1].memory_bank_.shape
    lines = [
        f"Default SoftPatchClassifier fitted on {len(train)} images ({fit_seconds:.1f} s; memory bank "
        f"{bank[0]} x {bank[1]}), scoring {len(test)} PNG files of {source}, end to end "
        f"(`score_samples(paths)`), {args.threads} threads, best of {args.passes} passes per engine "
        "(`first pass` = the engine's first; the very first pass of the process also grows its memory).",
        "",
    ]
    rows, stage_names, reference, first = [], [], None, {}
    for name in args.engines:
        try:
            engine, setup = make_engine(name, featurizer, args.threads, workdir)
            # Passes over the same files; the best is reported (the first of a
            # process also pays for growing its memory, hundreds of MB of
            # features, which a long-running scorer pays once).
            passes = [score_with_stages(clf, test, engine) for _ in range(args.passes)]
            scores, total, stages = min(passes, key=lambda result: result[1])
            first[name] = passes[0][1]
        except Exception as exc:
            rows.append((name, f"failed: {type(exc).__name__}: {str(exc)[:80]}", None, None, None))
            continue
        reference = scores if reference is None else reference
        diff = np.abs(scores - reference).max() / np.abs(reference).max()
        rows.append((name, total, stages, diff, setup))
        stage_names += [s for s in stages if s not in stage_names]
        print(name, f"{len(test) / total:.1f} images/s", file=sys.stderr, flush=True)
    if args.onnx_graph:
        try:
            scores, total, stages, setup = onnx_graph_scores(clf, test, args.threads, workdir)
            diff = np.abs(scores - reference).max() / np.abs(reference).max() if reference is not None else np.nan
            rows.append(("exported graph (onnxruntime)", total, stages, diff, setup))
            stage_names += [s for s in stages if s not in stage_names]
        except Exception as exc:
            rows.append(("exported graph", f"failed: {type(exc).__name__}: {str(exc)[:80]}", None, None, None))
    order = [
        "decode wait", "decode", "uint8 -> float", "resize", "CNN", "pooling", "CNN + pooling (engine)",
        "search", "decode (threads)", "uint8 -> float (threads)", "resize (threads)",
    ]
    stage_names = [s for s in order if s in stage_names] + [s for s in stage_names if s not in order and s != "other"] + ["other"]
    totals = {name: total for name, total, stages, _, _ in rows if stages is not None}

    def speedup(name, baseline):
        return f"{totals[baseline] / totals[name]:.2f}x" if baseline in totals and name in totals else ""

    header = [
        "engine", "images/s", "first pass images/s", "ms/image", "vs eager", "vs torch",
        *[f"{s} ms/img" for s in stage_names],
        "max rel diff", "setup s",
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, total, stages, diff, setup in rows:
        if stages is None:
            lines.append(f"| {name} | {total} |")
            continue
        cells = [f"{1e3 * stages[s] / len(test):.1f}" if s in stages else "" for s in stage_names]
        lines.append(
            f"| {name} | {len(test) / total:.1f} | {len(test) / first.get(name, total):.1f} | "
            f"{1e3 * total / len(test):.1f} | "
            f"{speedup(name, 'eager')} | {speedup(name, 'channels_last')} | " + " | ".join(cells)
            + f" | {diff:.1e} | {setup:.1f} |"
        )
    lines += [
        "",
        "Stages: `decode` = PNG -> uint8 array (PIL); `uint8 -> float`; `resize` = antialiased "
        "256 -> 224 (in the decoding threads when reading files); `CNN` = normalisation + backbone stages; `pooling` = local aggregation, "
        "upsampling, channel pooling; `search` = the memory step's search (`WeightedCoreset.min_score_samples`, the exact search pruned by each image's largest distance, for the default classifier); "
        "`decode wait` = the main thread waiting for the next decoded batch; "
        "`(threads)` = time in the decoding threads, overlapping the main thread's stages (not "
        "part of the total); `other` = the rest of the main thread's time (validation, which "
        "opens every file for its size, batching, the max), so the stages without `(threads)` "
        "and `other` add up to `ms/image`. "
        "`default` = the fitted model as it is (`engine=\"auto\"`: onnxruntime where installed); "
        "`vs eager` / `vs torch` = that row's speed over the eager NCHW row / the `channels_last` "
        "row (`engine=\"torch\"`), same run. "
        "`max rel diff` = max |score - first row's score| / max |first row's score|. `setup s` = engine "
        "export/compile (exported graph: `export_onnx`).",
    ]
    return lines


def fit_table(args, workdir):
    """Non-backbone share of a default classifier's fit with each PatchFeaturizer engine."""
    from skpatch import PatchFeaturizer, SoftPatchClassifier

    torch.set_num_threads(args.threads)
    train, _, source = scoring_files(1, workdir)
    train = train[: args.n_fit]
    lines = [
        f"`SoftPatchClassifier(random_state=0).set_params(featurizer__engine=...).fit(paths)` on "
        f"{len(train)} training PNG files of {source.split(' (')[0]}, {args.threads} threads. `backbone` = "
        "time inside the CNN (torch: `_maps`; onnxruntime: the session run, which also pools the "
        "features, plus its one-off export); `non-backbone` = the rest of the fit (decode, resize, "
        "pooling for torch, denoise, coreset, in-sample scoring for `offset_`).",
        "",
        "| engine | fit s | vs torch | backbone s | of which engine setup s | non-backbone s | non-backbone / backbone |",
        "|---|---|---|---|---|---|---|",
    ]
    import skpatch._featurizer as featurizer_module

    saved = PatchFeaturizer._maps, PatchFeaturizer._onnxruntime_features, featurizer_module.feature_session
    seconds = {}
    for engine in ("torch", "onnxruntime", "auto"):
        timers = _Timers()
        PatchFeaturizer._maps = timers.wrap("backbone", saved[0])
        PatchFeaturizer._onnxruntime_features = timers.wrap("backbone", saved[1])
        featurizer_module.feature_session = timers.wrap("setup", saved[2])
        try:
            start = _clock()
            SoftPatchClassifier(random_state=0).set_params(featurizer__engine=engine).fit(train)
            total = _clock() - start
        finally:
            PatchFeaturizer._maps, PatchFeaturizer._onnxruntime_features, featurizer_module.feature_session = saved
        backbone, setup = timers.seconds["backbone"], timers.seconds.get("setup", 0.0)
        seconds[engine] = total
        lines.append(
            f"| {engine} | {total:.1f} | {seconds['torch'] / total:.2f}x | {backbone:.1f} | {setup:.1f} | "
            f"{total - backbone:.1f} | {(total - backbone) / backbone:.2f} |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("featurizer", "scoring", "fit", "all"), default="all")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-images", type=int, default=64, help="images per featurizer timing (half for wide_resnet50_2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best is reported")
    parser.add_argument("--n-score", type=int, default=1000, help="images scored end to end")
    parser.add_argument("--n-fit", type=int, default=200, help="training images for the fit part")
    parser.add_argument("--passes", type=int, default=2, help="scoring passes per engine; the best is reported")
    parser.add_argument("--no-onnx-graph", dest="onnx_graph", action="store_false", help="skip the exported graph in part 2")
    parser.add_argument("--output", default=None, help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    warm_imports()
    load = os.getloadavg()[0]
    lines = [
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.threads} threads; load average "
        f"at start {load:.1f} (above the number of CPUs, other processes compete and every timing is noisy)",
        "",
    ]
    with tempfile.TemporaryDirectory() as workdir:
        if args.part in ("featurizer", "all"):
            lines += ["### Featurizer engines", ""] + featurizer_table(args, workdir) + [""]
        if args.part in ("scoring", "all"):
            lines += ["### Scoring throughput", ""] + scoring_table(args, workdir) + [""]
        if args.part in ("fit", "all"):
            lines += ["### Fit: non-backbone share", ""] + fit_table(args, workdir)
    text = "\n".join(lines)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
