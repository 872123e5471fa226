"""The ``skpatch`` command: fit, score, evaluate and inspect models from a shell.

``main(argv)`` parses the arguments, runs one subcommand and returns the exit
code; the ``skpatch`` console script and ``python -m skpatch`` both call it.
Results go to stdout or files, progress and messages to stderr, so a pipe
stays clean. An error prints one line (the traceback only with ``--debug``).

Each subcommand is a :class:`_Command` in ``_COMMANDS``: its name, one line
of help, a function adding its arguments and one running it. A new
subcommand is one more entry there.
"""

import argparse
import contextlib
import csv
import glob
import io
import json
import os
import sys
import time
import traceback
from collections import namedtuple
from itertools import islice

import numpy as np

from ._persist import ModelFileError
from .datasets._mvtec import IMAGE_EXTENSIONS

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_MODEL_FILE = 3
EXIT_MISSING_DEPENDENCY = 4
EXIT_SKIPPED = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    success
  {EXIT_ERROR}    error (invalid parameter, unreadable image: score --on-error stop stops at it, ...)
  {EXIT_USAGE}    usage error (unknown option, missing argument)
  {EXIT_MODEL_FILE}    model file refused (missing, truncated, modified, other format version)
  {EXIT_MISSING_DEPENDENCY}    an optional dependency is missing (matplotlib for --overlays, onnx for export)
  {EXIT_SKIPPED}    score --on-error skip: every readable image scored, but unreadable files were skipped
       (listed in DIR/errors.csv, or on stderr without --out)
  {EXIT_INTERRUPTED}  interrupted (Ctrl-C)"""

_LIST_EXTENSIONS = (".txt", ".lst")


class CommandError(Exception):
    """An error reported as one line, with an exit code."""

    def __init__(self, message, code=EXIT_ERROR):
        super().__init__(message)
        self.code = code


_Command = namedtuple("_Command", "name help add_arguments run")


# -- entry point ----------------------------------------------------------------


def main(argv=None):
    """Run the ``skpatch`` command line; return the exit code.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments after the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    code : int
        0 on success; see ``skpatch --help`` for the others.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version or a usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return args.run(args) or EXIT_OK
    except KeyboardInterrupt:
        print(f"skpatch {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (``skpatch score ... | head``).
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        return EXIT_ERROR
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(f"skpatch {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return _exit_code(exc)


def _exit_code(exc):
    if isinstance(exc, CommandError):
        return exc.code
    if isinstance(exc, ModelFileError):
        return EXIT_MODEL_FILE
    return EXIT_ERROR


def _one_line(exc):
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (CommandError, ValueError, TypeError, OSError)) else f"{type(exc).__name__}: {text}"


def _build_parser():
    from ._version import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages on stderr")
    common.add_argument("--progress", action="store_true", help="show progress bars even when stderr is not a terminal")
    common.add_argument("--debug", action="store_true", help="print the full traceback of an error")
    parser = argparse.ArgumentParser(
        prog="skpatch",
        description="Unsupervised image anomaly detection (SoftPatch / SoftPatch+) from the command line.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"skpatch {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _COMMANDS:
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.help, parents=[common],
            epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


# -- shared helpers -------------------------------------------------------------


def _progress_enabled(args):
    return not args.quiet and (args.progress or sys.stderr.isatty())


def _log(args, message):
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _bar(args, total, desc):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not _progress_enabled(args), dynamic_ncols=True)


def _set_verbose(estimator, verbose):
    """Set ``verbose`` on the estimator and every fitted step that has one."""
    estimator.verbose = verbose
    steps = [step for _, step in estimator.pipeline_.steps] if hasattr(estimator, "pipeline_") else []
    for step in steps:
        if hasattr(step, "get_params") and "verbose" in step.get_params(deep=False):
            step.verbose = verbose


def _size(path):
    size = os.path.getsize(path)
    return f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 2**10:.0f} kB"


ImageItem = namedtuple("ImageItem", "path name")


def collect_images(specs):
    """Image files named by folders, globs, files and list files, in order.

    A folder is searched recursively (hidden files and folders skipped), a
    glob is expanded (``**`` matches sub-folders), a ``.txt``/``.lst`` file
    or an ``@file`` lists one path per line (blank lines and lines starting
    with ``#`` skipped). Each image also gets a relative ``name`` under which
    its outputs are written: its path inside the folder or below the glob's
    fixed part, or its file name.
    """
    items, seen = [], set()
    for spec in specs:
        for path, name in _expand(spec):
            key = os.path.normcase(os.path.abspath(path))
            if key not in seen:
                seen.add(key)
                items.append(ImageItem(path, name))
    if not items:
        msg = f"no images found in {' '.join(specs)} (looked for files ending in {', '.join(IMAGE_EXTENSIONS)})."
        raise CommandError(msg)
    return _unique_names(items)


def _expand(spec):
    if spec.startswith("@") or (spec.lower().endswith(_LIST_EXTENSIONS) and os.path.isfile(spec)):
        yield from _read_list(spec[1:] if spec.startswith("@") else spec)
    elif os.path.isdir(spec):
        for path in _walk_images(spec):
            yield path, os.path.relpath(path, spec)
    elif glob.has_magic(spec):
        root = _glob_root(spec)
        for path in sorted(glob.glob(spec, recursive=True)):
            if os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS):
                yield path, os.path.relpath(path, root)
    elif os.path.isfile(spec):
        yield spec, os.path.basename(spec)
    else:
        raise CommandError(f"{spec!r}: no such file or folder.")


def _read_list(list_path):
    try:
        with open(list_path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except OSError as exc:
        raise CommandError(f"cannot read the file list {list_path!r}: {exc.strerror or exc}.") from None
    for line in lines:
        if line and not line.startswith("#"):
            if not os.path.isfile(line):
                raise CommandError(f"{line!r} (listed in {list_path!r}): no such file.")
            yield line, os.path.basename(line)


def _walk_images(folder):
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(root, f) for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
        ]
    return sorted(found)


def _glob_root(pattern):
    parts = []
    for part in pattern.replace(os.sep, "/").split("/"):
        if glob.has_magic(part):
            break
        parts.append(part)
    return "/".join(parts) or "."


def _unique_names(items):
    """Make output names unique (two inputs may share a file name)."""
    used, out = set(), []
    for item in items:
        name = os.path.normpath(item.name).lstrip("./\\") or os.path.basename(item.path)
        stem, ext = os.path.splitext(name)
        candidate, n = name, 1
        while candidate.lower() in used:
            candidate, n = f"{stem}_{n}{ext}", n + 1
        used.add(candidate.lower())
        out.append(ImageItem(item.path, candidate))
    return out


def _load_model(args):
    from ._persist import load_with_metadata

    estimator, metadata = load_with_metadata(args.model, device=getattr(args, "device", None))
    _set_verbose(estimator, 0)
    return estimator, metadata


def _is_segmenter(estimator):
    from ._segmenter import SoftPatchSegmenter

    return isinstance(estimator, SoftPatchSegmenter)


# -- scoring a stream of images -------------------------------------------------


_Unreadable = namedtuple("_Unreadable", "reason")
_Unreadable.__doc__ = "The result of a file that cannot be scored, and the one-line reason."


def _score_stream(estimator, items, *, batch_size, workers, need_maps, bar, stop_at_unreadable=True):
    """Yield a block of ``(item, image, result)`` per ``batch_size`` images.

    ``result`` holds the image's ``score`` (anomaly score, higher = more
    anomalous), ``anomalous`` and, when ``need_maps`` or for a segmenter,
    its anomaly ``map`` and predicted ``mask``. For a file that cannot be
    read, or holds an image the estimator would refuse, ``image`` is None
    and ``result`` an :class:`_Unreadable`; the images around it are scored
    all the same. With ``stop_at_unreadable``, a block ends at its first
    unreadable file (the images before it scored) and the stream with it.
    """
    from ._prefetch import prefetch_map

    # The next chunk is decoded while this one is scored: at most two
    # chunks of decoded images are in memory. A reading error comes back
    # as a value, so that it is attributed to its file, not to its chunk.
    images = prefetch_map(
        lambda item: _read_checked(item.path), items, n_workers=workers, ahead=batch_size if workers else 0,
    )
    pairs = zip(items, images)
    while True:
        chunk = list(islice(pairs, batch_size))
        if not chunk:
            return
        first_bad = next((i for i, (_, image) in enumerate(chunk) if isinstance(image, _Unreadable)), None)
        if stop_at_unreadable and first_bad is not None:
            chunk = chunk[: first_bad + 1]
        block = []
        for group in _same_size_runs(chunk):
            if isinstance(group[0][1], _Unreadable):
                block += [(item, None, failure) for item, failure in group]
                continue
            results = _score_group(estimator, [image for _, image in group], need_maps)
            block += [(item, image, result) for (item, image), result in zip(group, results)]
        bar.update(len(block))
        yield block
        if stop_at_unreadable and first_bad is not None:
            return


def _read_checked(path):
    """An image file as the estimators read it, or an :class:`_Unreadable`.

    Besides reading (``read_image`` checks the values), the shape is checked
    as the estimators check an image, so that a file they would refuse
    (wrong channels, too small) is reported here, by its path, rather than
    failing the estimator call of its whole batch.
    """
    from ._images import MIN_SIDE, _check_shape, _read

    try:
        image = _read(path, "the file")
        _check_shape(image, "the image", batch=False)
    except (ValueError, TypeError) as exc:  # _read turns Pillow's errors into ValueError
        return _Unreadable(_one_line(exc))
    height, width = image.shape[:2]
    if min(height, width) < MIN_SIDE:
        return _Unreadable(f"the image is {height}x{width} (HxW) pixels; images must be at least {MIN_SIDE}x{MIN_SIDE}.")
    return image


def _same_size_runs(chunk):
    """Split a chunk into runs of images of one size (an estimator call each).

    Unreadable files form runs of their own.
    """
    runs, last = [], None
    for pair in chunk:
        key = None if isinstance(pair[1], _Unreadable) else pair[1].shape[:2]
        if runs and key == last:
            runs[-1].append(pair)
        else:
            runs.append([pair])
        last = key
    return runs


def _score_group(estimator, images, need_maps):
    """Per-image results for images of one size (one pass of the CNN)."""
    segmenter = _is_segmenter(estimator)
    if segmenter or need_maps:
        maps, scores = estimator.anomaly_maps(images, return_scores=True)
    else:
        scores = -estimator.score_samples(images)
        maps = [None] * len(images)
    if segmenter:
        masks = -maps - estimator.offset_ < 0  # predict: decision_function < 0
        anomalous = masks.any(axis=(1, 2))
    else:
        # The classifier's pixels whose patch anomaly is past its image threshold.
        masks = maps > -estimator.offset_ if need_maps else maps
        anomalous = -scores - estimator.offset_ < 0  # predict == -1
    return [
        {"score": float(s), "anomalous": bool(a), "map": m, "mask": k}
        for s, a, m, k in zip(scores, anomalous, maps, masks)
    ]


# -- fit ------------------------------------------------------------------------


def _add_fit_arguments(parser):
    parser.add_argument("train", nargs="+", metavar="TRAIN", help="training images: folders (searched recursively), globs, image files or .txt/@ file lists; may contain unlabelled defects")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write (e.g. model.skpatch)")
    parser.add_argument("--segment", action="store_true", help="fit a SoftPatchSegmenter (pixel maps and masks) instead of a SoftPatchClassifier")
    _add_model_arguments(parser)
    parser.add_argument("--bank-dtype", choices=["float32", "float16"], default="float32", help="storage type of the memory bank in the file (default: %(default)s)")


def _add_model_arguments(parser):
    """The model's options, shared by fit and audit (read by _fit_params)."""
    parser.add_argument("--backbone", help="timm CNN name (default: the embedded tf_efficientnet_lite0)")
    parser.add_argument("--weights", help="weights file for --backbone, or 'imagenet' (default); the file is stored in the model")
    parser.add_argument("--threshold", type=float, help="fraction of training patch scores cut as noise (default: 0.15); the default discriminators also remove the cut patches' 8-neighbours (--set denoise__dilation=0 turns that off)")
    parser.add_argument("--method", choices=["lof", "nearest", "gaussian", "softpatch+"], help="noise discriminator score (default: lof)")
    parser.add_argument("--sampling-ratio", type=float, help="memory bank size as a fraction of all patches (default: 0.1)")
    parser.add_argument("--n-estimators", type=int, help="memory banks in a bagged memory (BaggedCoreset), each of a random share of the training images; 1 = one bank (default: one bank for the classifier, 10 with --segment; --max-samples alone also means 10)")
    parser.add_argument("--max-samples", type=float, help="share of the training images in each bank of a bagged memory (default: 0.2)")
    parser.add_argument("--image-size", type=int, help="CNN input size in pixels (default: 224)")
    parser.add_argument("--contamination", help="'auto' (default) or the expected fraction of anomalous training images")
    parser.add_argument("--seed", type=int, default=0, help="random_state (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="'auto' (default), 'cpu', 'cuda', 'cuda:N' or 'mps'")
    parser.add_argument("--n-jobs", type=int, help="torch threads (default: torch's setting)")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE", help="any estimator parameter, e.g. --set memory__search=brute (VALUE parsed as JSON, else a string); repeatable")


def _run_fit(args):
    from ._classifier import SoftPatchClassifier
    from ._segmenter import SoftPatchSegmenter

    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise CommandError(f"cannot write {args.output!r}: the folder {folder!r} does not exist.")
    items = collect_images(args.train)
    cls = SoftPatchSegmenter if args.segment else SoftPatchClassifier
    estimator = cls(random_state=args.seed, device=args.device, n_jobs=args.n_jobs)
    estimator.set_params(**_fit_params(args))
    _set_verbose(estimator, 1 if _progress_enabled(args) else 0)
    _log(args, f"fitting {cls.__name__} on {len(items)} images ...")
    start = time.perf_counter()
    estimator.fit([item.path for item in items])
    elapsed = time.perf_counter() - start
    _set_verbose(estimator, 0)  # the file should not turn on progress bars
    estimator.save(args.output, bank_dtype=args.bank_dtype)
    _log(args, f"fitted in {elapsed:.1f} s; wrote {args.output} ({_size(args.output)})")


def _fit_params(args):
    params = {}
    options = {
        "featurizer__backbone": args.backbone, "featurizer__weights": args.weights,
        "featurizer__image_size": args.image_size, "denoise__threshold": args.threshold,
        "denoise__method": args.method, "memory__sampling_ratio": args.sampling_ratio,
    }
    params.update({k: v for k, v in options.items() if v is not None})
    params.update(_memory_params(args))
    if args.contamination is not None:
        params["contamination"] = _parse_value(args.contamination)
    for assignment in args.set:
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise CommandError(f"--set expects PARAM=VALUE; got {assignment!r}.", EXIT_USAGE)
        params[key.strip()] = _parse_value(value)
    return params


def _memory_params(args):
    """--n-estimators / --max-samples: a BaggedCoreset memory, or one WeightedCoreset for 1."""
    from ._bagging import BaggedCoreset
    from ._coreset import WeightedCoreset

    if args.n_estimators is None and args.max_samples is None:
        return {}
    if args.n_estimators == 1:
        if args.max_samples is not None:
            raise CommandError("--max-samples needs a bagged memory: --n-estimators > 1.", EXIT_USAGE)
        return {"memory": WeightedCoreset()}
    params = {"memory": BaggedCoreset()}
    if args.n_estimators is not None:
        params["memory__n_estimators"] = args.n_estimators
    if args.max_samples is not None:
        params["memory__max_samples"] = args.max_samples
    return params


def _parse_value(text):
    """A JSON literal (number, true/false, null, list) or else the string itself."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


# -- score ----------------------------------------------------------------------


def _add_score_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help="model file written by 'skpatch fit' or est.save()")
    parser.add_argument("images", nargs="+", metavar="IMAGES", help="folders (searched recursively), globs, image files or .txt/@ file lists")
    parser.add_argument("--out", metavar="DIR", help="write DIR/scores.csv (and the maps, overlays and masks asked for)")
    parser.add_argument("--format", choices=["csv", "json"], default="csv", help="stdout: 'csv' (only without --out) or 'json' (one JSON object per line, as images are scored)")
    parser.add_argument("--maps", action="store_true", help="write anomaly maps to DIR/maps/ (see --map-format)")
    parser.add_argument("--map-format", choices=["png", "npy"], default="png", help="maps as 8-bit PNG, 128 = the decision threshold, or as float32 .npy (default: %(default)s)")
    parser.add_argument("--overlays", action="store_true", help="write DIR/overlays/: heat map over the image, outline of the predicted defect (needs matplotlib)")
    parser.add_argument("--masks", action="store_true", help="write predicted defect masks to DIR/masks/ (PNG, 255 = defect)")
    parser.add_argument("--batch-size", type=int, default=16, help="images scored per pass; bounds memory (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="threads decoding the next images while the CNN runs; 0 decodes in turn (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="'auto' (default), 'cpu', 'cuda', 'cuda:N' or 'mps'")
    parser.add_argument(
        "--on-error", choices=["stop", "skip"], default="stop",
        help="a file that cannot be read, or holds an image the model refuses: 'stop' there, keeping the rows "
        "scored before it, with exit code 1 (default: a bad file often means a failing camera or a full disk, "
        "which someone should see), or 'skip' it, list it in DIR/errors.csv (on stderr without --out), "
        f"score every other image and exit with code {EXIT_SKIPPED}",
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue an earlier (stopped or killed) run into the same --out DIR: the images already in "
        "DIR/scores.csv, matched by path, are not scored again, its rows are kept and the others' appended; "
        "its columns must be this model's. Without --resume an existing DIR/scores.csv is replaced",
    )


def _run_score(args):
    if (args.maps or args.overlays or args.masks) and not args.out:
        raise CommandError("--maps, --overlays and --masks write into a folder: add --out DIR.", EXIT_USAGE)
    if args.resume and not args.out:
        raise CommandError("--resume continues DIR/scores.csv: add --out DIR.", EXIT_USAGE)
    if args.batch_size < 1 or args.workers < 0:
        raise CommandError("--batch-size must be >= 1 and --workers >= 0.", EXIT_USAGE)
    if args.overlays:
        _require_matplotlib("--overlays")
    estimator, _ = _load_model(args)
    items = collect_images(args.images)
    segmenter = _is_segmenter(estimator)
    columns = ["path", "anomaly_score", "label"] + (["defect_area_px", "defect_area_fraction"] if segmenter else [])
    kept = _scored_rows(os.path.join(args.out, "scores.csv"), columns) if args.resume else []
    done = {_path_key(row[0]) for row in kept}
    todo = [item for item in items if _path_key(item.path) not in done]
    if args.resume:
        _log(args, f"resuming: {len(items) - len(todo)} of the {len(items)} images are in {os.path.join(args.out, 'scores.csv')} already")
    start = time.perf_counter()
    with _Outputs(args, estimator, columns, kept) as outputs:
        n_anomalous = _score_into(outputs, estimator, todo, args)
    elapsed = time.perf_counter() - start
    n_scored = len(todo) - len(outputs.errors)
    where = f"; wrote {outputs.scores.path}" if args.out else ""
    _log(args, f"scored {n_scored} images in {elapsed:.1f} s ({n_scored / elapsed:.1f} images/s): {n_anomalous} anomalous{where}")
    if outputs.errors:  # only with --on-error skip: stop raises
        n = len(outputs.errors)
        listed = f"listed in {outputs.error_file.path}" if args.out else "listed above"
        print(f"skpatch score: skipped {n} unreadable {'file' if n == 1 else 'files'} of {len(todo)} ({listed})", file=sys.stderr)
        return EXIT_SKIPPED
    return EXIT_OK


def _score_into(outputs, estimator, items, args):
    """Score ``items`` into ``outputs``, committing each block; return the number found anomalous."""
    stop = args.on_error == "stop"
    need_maps = bool(args.maps or args.overlays or args.masks)
    n_anomalous = 0
    with _bar(args, len(items), "score") as bar:
        stream = _score_stream(
            estimator, items, batch_size=args.batch_size, workers=args.workers, need_maps=need_maps, bar=bar,
            stop_at_unreadable=stop,
        )
        try:
            for block in stream:
                for item, image, result in block:
                    outputs.write(item, image, result)
                    n_anomalous += not isinstance(result, _Unreadable) and result["anomalous"]
                outputs.commit()
                if stop and outputs.errors:
                    raise CommandError(_stopped_message(args, outputs))
        except (Exception, KeyboardInterrupt) as exc:
            if args.out and not isinstance(exc, CommandError):
                outputs.commit()
                print(
                    f"skpatch score: {outputs.scores.path} is partial: it holds {outputs.n_rows} rows; "
                    "--resume continues the run", file=sys.stderr, flush=True,
                )
            raise
    return n_anomalous


def _stopped_message(args, outputs):
    path, reason = outputs.errors[-1]
    if args.out:
        where = f"{outputs.scores.path} is partial: it holds {outputs.n_rows} rows"
        rerun = "--resume --on-error skip"
    else:
        where = f"standard output holds the {outputs.n_rows} rows scored before it"
        rerun = "--on-error skip"
    return f"{path!r}: {reason.rstrip('.')}. Stopped there (--on-error stop): {where}; rerun with {rerun} to score the rest."


def _path_key(path):
    """Two spellings of one file (relative, absolute) are one image."""
    return os.path.normcase(os.path.abspath(path))


def _scored_rows(path, columns):
    """The rows of an earlier run's ``scores.csv``, for ``--resume``; none without the file."""
    if not os.path.exists(path):
        return []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CommandError(f"--resume: cannot read {path!r}: {exc}.") from None
    # A file written whole by _AtomicCsv ends with a newline; one cut short
    # by another writer ends in half a row, which is scored again.
    text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or rows[0] != columns:
        found = ",".join(rows[0]) if rows else "no header"
        msg = (
            f"--resume: {path!r} has the columns {found!r}, not {','.join(columns)!r} as this model writes; "
            "resume with the model that wrote it, or drop --resume to replace the file."
        )
        raise CommandError(msg)
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(columns):
            raise CommandError(f"--resume: line {number} of {path!r} has {len(row)} fields, not {len(columns)}.")
    return rows[1:]


class _AtomicCsv:
    """A CSV file that is only ever replaced whole.

    Rows are kept in memory; :meth:`commit` writes them all to ``.NAME.tmp``
    in the same folder, syncs it and renames it over the file (``os.replace``,
    atomic on POSIX and Windows). A reader, or a run killed at any moment,
    sees a complete CSV of whole blocks. Rewriting costs about a millisecond
    per MB of CSV, little next to scoring a block of images.
    """

    def __init__(self, path, header, rows=()):
        self.path = path
        self._buffer = io.StringIO()
        self._writer = csv.writer(self._buffer, lineterminator="\n")
        self._lines = [self._line(header)] + [self._line(row) for row in rows]
        self._dirty = True

    def _line(self, row):
        self._buffer.seek(0)
        self._buffer.truncate()
        self._writer.writerow(row)
        return self._buffer.getvalue()

    def append(self, row):
        self._lines.append(self._line(row))
        self._dirty = True

    def commit(self):
        if not self._dirty:
            return
        folder, name = os.path.split(self.path)
        temporary = os.path.join(folder, f".{name}.tmp")
        try:
            with open(temporary, "w", newline="", encoding="utf-8") as handle:
                handle.writelines(self._lines)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise
        self._dirty = False


class _Outputs:
    """Writes each scored image's row, map, overlay and mask as it comes.

    With ``--out``, ``DIR/scores.csv`` and ``DIR/errors.csv`` (path and
    reason of each unreadable file; the header alone when there is none)
    change only at :meth:`commit`, at the end of each block, and then whole.
    """

    def __init__(self, args, estimator, columns, kept=()):
        self.args = args
        self.columns = columns
        self.threshold = -float(estimator.offset_)
        self.n_rows = len(kept)
        self.errors = []  # (path, reason) of each unreadable file
        self.scores = self.error_file = None
        self.rows = csv.writer(sys.stdout, lineterminator="\n") if args.format == "csv" and not args.out else None
        if args.out:
            os.makedirs(args.out, exist_ok=True)
            self.scores = _AtomicCsv(os.path.join(args.out, "scores.csv"), columns, kept)
            self.error_file = _AtomicCsv(os.path.join(args.out, "errors.csv"), ["path", "reason"])
            self.commit()
        if self.rows is not None:
            self.rows.writerow(columns)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        # Written rows are whole: keep them whatever ended the run, without
        # hiding the error that did.
        with contextlib.suppress(OSError) if exc_type else contextlib.nullcontext():
            self.commit()

    def commit(self):
        """Make the rows written so far visible: replace the CSV files, flush stdout."""
        for target in (self.scores, self.error_file):
            if target is not None:
                target.commit()
        sys.stdout.flush()

    def write(self, item, image, result):
        if isinstance(result, _Unreadable):
            self._write_error(item.path, result.reason)
            return
        record = {"path": item.path, "anomaly_score": result["score"], "label": "anomalous" if result["anomalous"] else "normal"}
        if "defect_area_px" in self.columns:
            mask = result["mask"]
            record["defect_area_px"] = int(mask.sum())
            record["defect_area_fraction"] = float(mask.mean())
        row = [record[c] if not isinstance(record[c], float) else repr(record[c]) for c in self.columns]
        if self.scores is not None:
            self.scores.append(row)
        if self.rows is not None:
            self.rows.writerow(row)
        self.n_rows += 1
        if self.args.format == "json":
            print(json.dumps(record), flush=True)
        stem = os.path.splitext(item.name)[0]
        if self.args.maps and self.args.map_format == "npy":
            np.save(self._path("maps", stem + ".npy"), result["map"].astype(np.float32), allow_pickle=False)
        elif self.args.maps:
            self._png(self._path("maps", stem + ".png"), np.clip(result["map"] / (2 * self.threshold), 0, 1) * 255)
        if self.args.masks:
            self._png(self._path("masks", stem + ".png"), result["mask"] * 255)
        if self.args.overlays:
            _write_overlay(self._path("overlays", stem + ".png"), image, result, self.threshold)

    def _write_error(self, path, reason):
        self.errors.append((path, reason))
        if self.error_file is not None:
            self.error_file.append([path, reason])
        elif self.args.on_error == "skip":
            # Without --out the list goes to stderr, a line per file as it comes.
            print(f"skpatch score: skipped {path!r}: {reason}", file=sys.stderr, flush=True)

    def _path(self, kind, name):
        path = os.path.join(self.args.out, kind, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    @staticmethod
    def _png(path, values):
        from PIL import Image

        Image.fromarray(np.rint(values).astype(np.uint8)).save(path)


def _require_matplotlib(option):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        msg = f"{option} needs matplotlib, which is not installed: pip install 'skpatch[plot]' (or pip install matplotlib)."
        raise CommandError(msg, EXIT_MISSING_DEPENDENCY) from None


def _write_overlay(path, image, result, threshold):
    """Heat map over the image (one colour scale for all images) and the defect outline."""
    from matplotlib.figure import Figure

    from .plotting import plot_anomaly_map

    height, width = image.shape[:2]
    # Small images are drawn at 256 pixels wide or more, so the title fits.
    scale = max(1.0, 256 / width)
    title = 32  # pixels for two lines of text
    fig = Figure(figsize=(scale * width / 100, (scale * height + title) / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, scale * height / (scale * height + title)))
    # The scale is fixed at [0, 2 x threshold]: the decision threshold sits
    # in its middle, so colours mean the same in every overlay.
    plot_anomaly_map(image, result["map"], mask=result["mask"], ax=ax, vmin=0.0, vmax=2 * threshold)
    ax.axis("off")
    label = "anomalous" if result["anomalous"] else "normal"
    fig.suptitle(f"{label}\nscore {result['score']:.3g} (threshold {threshold:.3g})", fontsize=8, y=1.0, va="top")
    fig.savefig(path)


# -- evaluate -------------------------------------------------------------------


def _add_evaluate_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help="model file")
    parser.add_argument("data", metavar="MVTEC_DIR", help="data set root in the MVTec AD layout: test/<type>/ and optionally ground_truth/ (train/ is not needed)")
    parser.add_argument("--json", default="evaluation.json", metavar="FILE", help="JSON file to write (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=16, help="images scored per pass (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="image decoding threads (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="'auto' (default), 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _run_evaluate(args):
    from .datasets import load_mvtec
    from .metrics import aupro, f1_max, image_auroc, pixel_auroc

    estimator, metadata = _load_model(args)
    data = load_mvtec(args.data, lazy=True, load_train=False)
    items = [ImageItem(path, os.path.basename(path)) for path in data.test_images]
    masks = data.test_masks if isinstance(data.test_masks, np.ndarray) else None
    scores, maps = [], []
    start = time.perf_counter()
    with _bar(args, len(items), "evaluate") as bar:
        stream = _score_stream(estimator, items, batch_size=args.batch_size, workers=args.workers, need_maps=masks is not None, bar=bar)
        for item, _, result in (entry for block in stream for entry in block):
            if isinstance(result, _Unreadable):
                raise CommandError(f"{item.path!r}: {result.reason}")
            scores.append(result["score"])
            if masks is not None:
                maps.append(result["map"])
    elapsed = time.perf_counter() - start
    scores, labels = np.asarray(scores), data.test_labels
    results = {
        "model": os.path.abspath(args.model),
        "estimator": metadata["estimator"],
        "data": data.root,
        "n_test_images": len(items),
        "n_defective": int(labels.sum()),
        "seconds": round(elapsed, 3),
        "image_auroc": image_auroc(labels, scores),
        "image_f1_max": f1_max(labels, scores),
        "pixel_auroc": None,
        "aupro": None,
        "image_auroc_per_defect_type": {},
    }
    if masks is not None:
        maps = np.stack(maps)
        results["pixel_auroc"] = pixel_auroc(masks, maps)
        results["aupro"] = aupro(masks, maps)
    good = data.test_defect_types == "good"
    for kind in sorted(set(data.test_defect_types) - {"good"}):
        subset = good | (data.test_defect_types == kind)
        if good.any():
            results["image_auroc_per_defect_type"][kind] = image_auroc(labels[subset], scores[subset])
    with open(args.json, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    print(_evaluation_table(results, masks is not None, data.test_masks is not None))
    _log(args, f"wrote {args.json}")


def _evaluation_table(results, have_pixels, have_masks):
    missing = "n/a (masks differ in size)" if have_masks else "n/a (no ground_truth masks)"

    def value(key):
        return f"{results[key]:.4f}" if results[key] is not None else missing

    lines = [
        f"{results['estimator']} on {results['data']}",
        f"{results['n_test_images']} test images ({results['n_defective']} defective), scored in {results['seconds']:.1f} s",
        "",
        f"{'metric':<22}value",
        f"{'image AUROC':<22}{value('image_auroc')}",
        f"{'pixel AUROC':<22}{value('pixel_auroc')}",
        f"{'AUPRO (FPR <= 0.3)':<22}{value('aupro')}",
        f"{'F1-max (image)':<22}{value('image_f1_max')}",
    ]
    if results["image_auroc_per_defect_type"]:
        lines += ["", "image AUROC per defect type (against the good images):"]
        lines += [f"  {kind:<20}{auc:.4f}" for kind, auc in results["image_auroc_per_defect_type"].items()]
    return "\n".join(lines)


# -- inspect --------------------------------------------------------------------


def _add_inspect_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help="model file")
    parser.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: %(default)s)")


def _run_inspect(args):
    estimator, metadata = _load_model(args)
    info = describe_model(estimator, metadata, args.model)
    if args.format == "json":
        print(json.dumps(info, indent=2))
        return
    width = max(len(key) for key in info)
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for sub, item in value.items():
                print(f"  {sub}: {item}")
        else:
            print(f"{key:<{width}}  {value}")


def describe_model(estimator, metadata, path):
    """What a model file holds, as a JSON-serialisable dict."""
    featurizer, denoise, coreset = (step for _, step in estimator.pipeline_.steps)
    backbone = metadata.get("featurizer") or {}
    if denoise == "passthrough":
        removal = 0.0
    else:
        removal = float(getattr(denoise, "threshold_", denoise.threshold))
    info = {
        "file": os.fspath(path),
        "file_size": _size(path),
        "estimator": metadata["estimator"],
        "backbone": f"{backbone.get('backbone')} ({backbone.get('weights')} weights, sha256 {backbone.get('weights_sha256', '')[:16]}...)",
        "training_images": int(estimator.n_train_images_),
        "image_size": "x".join(str(v) for v in estimator.image_size_),
        "removal_ratio": removal,
        "removed_patches": (
            f"{int((~denoise.kept_).sum())} of {denoise.kept_.size}" if hasattr(denoise, "kept_") else "none"
        ),
        "memory_bank": _describe_memory(coreset, metadata),
        "offset": float(estimator.offset_),
        "contamination": estimator.contamination,
        "device": estimator.device,
        "format_version": metadata["format_version"],
        "saved_with": f"skpatch {metadata['skpatch_version']}, " + ", ".join(f"{k} {v}" for k, v in metadata.get("versions", {}).items()),
        "featurizer": _plain_params(featurizer),
        "denoise": "passthrough" if denoise == "passthrough" else _plain_params(denoise),
        "memory": _plain_params(coreset),
    }
    return info


def _describe_memory(memory, metadata):
    from ._bagging import memory_members

    members = memory_members(memory)
    n_rows = sum(len(m.memory_bank_) for m in members)
    bagged = f" in {len(members)} bagged banks" if hasattr(memory, "estimators_") else ""
    return f"{n_rows} patches x {memory.n_features_in_} features{bagged} (stored as {metadata.get('bank_dtype')})"


def _plain_params(step):
    return {
        key: value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
        for key, value in step.get_params(deep=False).items()
    }


# -- export ---------------------------------------------------------------------


def _add_export_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help="model file written by 'skpatch fit' or est.save()")
    parser.add_argument("-o", "--output", required=True, metavar="ONNX", help="ONNX file to write (e.g. model.onnx)")
    parser.add_argument("--input-dtype", choices=["uint8", "float32"], default="uint8", help="type of the graph's input images: uint8 in 0..255 or float32 in [0, 1] (default: %(default)s)")


def _run_export(args):
    import warnings

    folder = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(folder):
        raise CommandError(f"cannot write {args.output!r}: the folder {folder!r} does not exist.")
    _require_onnx()
    from ._onnx import _summary, export_onnx

    estimator, _ = _load_model(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        metadata = export_onnx(estimator, args.output, input_dtype=args.input_dtype)
    for warning in caught:
        # An approximate search (ivf, pynndescent): the graph's scores are exact ones.
        _log(args, f"skpatch export: warning: {' '.join(str(warning.message).split())}")
    _log(args, f"{_summary(args.output, metadata)} ({_size(args.output)})")


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError:
        msg = "export needs the onnx package, which is not installed: pip install 'skpatch[export]' (onnx, onnxscript and onnxruntime)."
        raise CommandError(msg, EXIT_MISSING_DEPENDENCY) from None


# -- audit ----------------------------------------------------------------------


def _add_audit_arguments(parser):
    parser.add_argument("train", nargs="+", metavar="TRAIN", help="training images to audit: folders (searched recursively), globs, image files or .txt/@ file lists")
    parser.add_argument("--out", required=True, metavar="DIR", help="write DIR/audit.csv (every image, most suspicious first) and DIR/audit.html (summary, score histogram, the most suspicious images beside their anomaly maps)")
    parser.add_argument("--list", action="store_true", help="print the flagged paths to stdout, one per line, most suspicious first (the summary then goes to stderr)")
    parser.add_argument("--move-to", metavar="DIR", help="move the flagged files into DIR, under their paths relative to TRAIN, so that a refit leaves them out; DIR must not be inside a TRAIN folder, and nothing is moved if a file would be overwritten")
    parser.add_argument("--n-show", type=int, default=12, metavar="N", help="most suspicious images shown in audit.html (default: %(default)s)")
    parser.add_argument("-o", "--output", metavar="MODEL", help="also save the fitted model (e.g. model.skpatch)")
    _add_model_arguments(parser)


def _run_audit(args):
    from ._audit import audit_training_set
    from ._classifier import SoftPatchClassifier

    if args.n_show < 0:
        raise CommandError("--n-show must be >= 0.", EXIT_USAGE)
    try:  # before the fit, which takes minutes (and -o may point into it)
        os.makedirs(args.out, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"cannot create the folder --out {args.out!r}: {exc.strerror or exc}.") from None
    if args.output is not None:
        _check_output_folder(args.output)
    if args.move_to is not None:
        _check_move_target(args.move_to, args.train)
    items = collect_images(args.train)
    estimator = SoftPatchClassifier(random_state=args.seed, device=args.device, n_jobs=args.n_jobs)
    estimator.set_params(**_fit_params(args))
    _set_verbose(estimator, 1 if _progress_enabled(args) else 0)
    _log(args, f"auditing {len(items)} training images ...")
    start = time.perf_counter()
    audit = audit_training_set([item.path for item in items], estimator, output=args.out, n_show=args.n_show)
    _log(args, f"audited in {time.perf_counter() - start:.1f} s")
    if args.output is not None:
        _set_verbose(audit.estimator, 0)  # the file should not turn on progress bars
        audit.estimator.save(args.output)
        _log(args, f"wrote {args.output} ({_size(args.output)})")
    flagged = [items[i] for i in audit.ranking if audit.flagged[i]]
    # Refused before anything is printed or moved: all the moves or none.
    moves = _plan_moves(flagged, args.move_to) if args.move_to is not None else []
    summary = _audit_summary(audit, args)
    if args.list:
        for item in flagged:
            print(item.path)
        _log(args, summary)
    else:
        print(summary)
    if args.move_to is not None:
        _move(args, moves)


def _check_output_folder(path):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CommandError(f"cannot write {path!r}: the folder {folder!r} does not exist.")


def _check_move_target(target, specs):
    """Refuse a --move-to folder that is a file or lies inside a folder being audited.

    Moved images inside a TRAIN folder would be found there again by the
    next ``skpatch fit`` or ``skpatch audit`` of that folder.
    """
    if os.path.exists(target) and not os.path.isdir(target):
        raise CommandError(f"--move-to {target!r} is a file, not a folder.", EXIT_USAGE)
    real = os.path.realpath(target)
    for spec in specs:
        root = spec if os.path.isdir(spec) else _glob_root(spec) if glob.has_magic(spec) else None
        if root is not None and os.path.commonpath([real, os.path.realpath(root)]) == os.path.realpath(root):
            msg = (
                f"--move-to {target!r} is inside the training folder {root!r}, where the moved "
                "images would be found again; choose a folder outside it."
            )
            raise CommandError(msg, EXIT_USAGE)


def _plan_moves(flagged, target):
    """(source, destination) of each flagged file; refuse if any destination exists."""
    moves = [(item.path, os.path.join(target, item.name)) for item in flagged]
    taken = [destination for _, destination in moves if os.path.lexists(destination)]
    if taken:
        more = f" (and {len(taken) - 1} more)" if len(taken) > 1 else ""
        msg = f"--move-to: {taken[0]!r}{more} already exists; nothing was moved (no file is overwritten)."
        raise CommandError(msg)
    return moves


def _move(args, moves):
    import shutil

    for source, destination in moves:
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if os.path.lexists(destination):  # appeared since the check
            raise CommandError(f"--move-to: {destination!r} already exists; {source!r} and the files after it were not moved.")
        shutil.move(source, destination)  # a symbolic link moves as a link
        _log(args, f"moved {source} -> {destination}")
    _log(args, f"moved {len(moves)} flagged files to {args.move_to}")


def _audit_summary(audit, args):
    if audit.estimate_source == "flagged":
        source = "the number flagged; the model has no contamination_estimate_"
    else:
        source = "contamination_estimate_ x the number of images"
    lines = [
        ("training images", str(len(audit.ranking))),
        ("flagged", f"{audit.n_flagged} (anomaly score above {audit.threshold:.4g})"),
        ("estimated defective", f"{audit.n_defective_estimate:.1f} ({source})"),
        ("report", audit.files["html"]),
        ("ranking", audit.files["csv"]),
    ]
    return "\n".join(f"{key:<21}{value}" for key, value in lines)


# -- demo -----------------------------------------------------------------------


def _add_demo_arguments(parser):
    from ._demo import add_arguments

    add_arguments(parser)


def _run_demo(args):
    from ._demo import run

    _require_matplotlib("demo")
    run(args, verbose=1 if _progress_enabled(args) else 0)


_COMMANDS = [
    _Command("fit", "fit a model on a folder of (possibly contaminated) images and save it", _add_fit_arguments, _run_fit),
    _Command("audit", "rank the training images by anomaly: which look defective? CSV, HTML report, --list, --move-to", _add_audit_arguments, _run_audit),
    _Command("score", "score any number of images with a saved model: CSV, maps, overlays, masks", _add_score_arguments, _run_score),
    _Command("evaluate", "image AUROC, pixel AUROC, AUPRO and F1-max on an MVTec AD-layout folder", _add_evaluate_arguments, _run_evaluate),
    _Command("inspect", "show what a model file holds", _add_inspect_arguments, _run_inspect),
    _Command("export", "write a model file as one ONNX graph (images in, scores out) for onnxruntime", _add_export_arguments, _run_export),
    _Command("demo", "fit, score and draw a figure on the bottle data (or generated images)", _add_demo_arguments, _run_demo),
]
