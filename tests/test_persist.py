"""Model files: est.save / skpatch.load round trips, and refusal of bad files."""

import hashlib
import io
import json
import os
import pickle
import zipfile

import joblib
import numpy as np
import pytest
import torch

import skpatch
from skpatch import ModelFileError, NoiseDiscriminator, SoftPatchClassifier, SoftPatchSegmenter, WeightedCoreset
from skpatch._persist import TRUSTED_CLASSES, _trusted_classes

ESTIMATORS = [SoftPatchClassifier, SoftPatchSegmenter]


def _small(cls, **params):
    est = cls(random_state=0).set_params(featurizer__image_size=64, featurizer__embed_dim=64)
    if params.get("denoise") != "passthrough":
        est.set_params(denoise__n_neighbors=4)
    return est.set_params(**params)


@pytest.fixture(scope="module")
def data():
    from skpatch.datasets import make_defects

    X, y, masks = make_defects(24, image_size=64, kind="object", defect_ratio=1 / 3, random_state=0)
    return X[y == 0][:12], X


@pytest.fixture(scope="module")
def fitted(data):
    train, _ = data
    return {cls: _small(cls).fit(train) for cls in ESTIMATORS}


def _roundtrip(est, tmp_path, **kwargs):
    path = tmp_path / "model.skpatch"
    est.save(path, **kwargs)
    return skpatch.load(path), path


def _assert_same(a, b, where="model"):
    """Recursively equal: same types, parameters and fitted attributes, bit for bit."""
    assert type(a) is type(b), where
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, torch.nn.Module):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys(), where
        for key in sa:
            assert torch.equal(sa[key], sb[key]), f"{where}.{key}"
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif hasattr(a, "get_params"):
        # Private attributes are caches, which model files do not store by
        # design (a BaggedCoreset's shared search lists are built on demand).
        va = {k: v for k, v in vars(a).items() if not k.startswith("_")}
        vb = {k: v for k, v in vars(b).items() if not k.startswith("_")}
        assert va.keys() == vb.keys(), where
        for key in va:
            _assert_same(va[key], vb[key], f"{where}.{key}")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), where
    else:
        assert a == b, where


# -- round trips ------------------------------------------------------------------


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_loaded_model_scores_bit_identical(cls, fitted, data, tmp_path):
    _, X = data
    est = fitted[cls]
    loaded, _ = _roundtrip(est, tmp_path)
    assert type(loaded) is cls
    for method in ("score_samples", "decision_function", "predict"):
        expected, got = getattr(est, method)(X), getattr(loaded, method)(X)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected, err_msg=method)


@pytest.mark.parametrize(
    "cls, params",
    [
        (SoftPatchClassifier, {}),
        (SoftPatchSegmenter, {}),
        (SoftPatchClassifier, {"denoise": "passthrough"}),
        (SoftPatchClassifier, {"denoise__method": "softpatch+", "contamination": 0.1}),
        (SoftPatchSegmenter, {"memory__search": "brute", "sigma": 0.0}),
        (SoftPatchClassifier, {"memory__search": "ivf", "featurizer__feature_dtype": "float16"}),
    ],
    ids=["classifier", "segmenter", "patchcore", "softpatch+", "brute", "ivf-float16-features"],
)
def test_every_estimator_round_trips_all_its_state(cls, params, data, fitted, tmp_path):
    """Every parameter and fitted attribute comes back with its type and bits.

    A new attribute of a type the format cannot store makes ``save`` raise
    here, so it cannot be silently dropped.
    """
    train, X = data
    est = _small(cls, **params).fit(train) if params else fitted[cls]
    loaded, _ = _roundtrip(est, tmp_path)
    _assert_same(est, loaded)
    np.testing.assert_array_equal(loaded.score_samples(X[:4]), est.score_samples(X[:4]))


def test_random_backbone_weights_are_stored_and_checked(data, tmp_path):
    train, X = data
    est = _small(SoftPatchClassifier, featurizer__weights=None).fit(train)
    loaded, path = _roundtrip(est, tmp_path)
    np.testing.assert_array_equal(loaded.score_samples(X), est.score_samples(X))
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("skpatch.json"))["metadata"]
    assert metadata["featurizer"]["weights"] == "stored"
    # The embedded backbone is referenced, not stored: its file is far smaller.
    embedded = tmp_path / "embedded.skpatch"
    _small(SoftPatchClassifier).fit(train).save(embedded)
    assert os.path.getsize(embedded) < os.path.getsize(path) / 3


def test_metadata_records_versions_and_hashes(fitted, tmp_path):
    path = tmp_path / "m.skpatch"
    fitted[SoftPatchClassifier].save(path)
    with zipfile.ZipFile(path) as archive:
        metadata = json.loads(archive.read("skpatch.json"))["metadata"]
        for name, info in metadata["arrays"].items():
            assert hashlib.sha256(archive.read(name)).hexdigest() == info["sha256"]
    assert metadata["format_version"] == 1 and metadata["skpatch_version"] == skpatch.__version__
    assert metadata["featurizer"]["backbone"] == "tf_efficientnet_lite0"
    assert metadata["featurizer"]["weights"] == "embedded"
    assert len(metadata["featurizer"]["weights_sha256"]) == 64
    assert metadata["estimator"] == "skpatch.SoftPatchClassifier"


def test_float16_bank_halves_the_bank_and_stays_exact_search(fitted, data, tmp_path):
    _, X = data
    est = fitted[SoftPatchClassifier]
    path32, path16 = tmp_path / "32.skpatch", tmp_path / "16.skpatch"
    est.save(path32)
    est.save(path16, bank_dtype="float16")
    bank_bytes = est.named_steps["coreset"].memory_bank_.nbytes
    assert os.path.getsize(path32) - os.path.getsize(path16) >= 0.45 * bank_bytes
    loaded = skpatch.load(path16)
    coreset = loaded.named_steps["coreset"]
    assert coreset.memory_bank_.dtype == np.float32
    rounded = est.named_steps["coreset"].memory_bank_.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(coreset.memory_bank_, rounded)
    # The exact search still finds the brute-force neighbour in the rounded bank.
    queries = loaded.named_steps["featurizer"].transform(X[:4]).reshape(-1, rounded.shape[1])
    brute = coreset.set_params(search="brute").kneighbors(queries)
    exact = coreset.set_params(search="exact").kneighbors(queries)
    np.testing.assert_array_equal(exact[1], brute[1])
    np.testing.assert_allclose(loaded.score_samples(X), est.score_samples(X), rtol=1e-2)
    with pytest.raises(ValueError, match="bank_dtype"):
        est.save(tmp_path / "x.skpatch", bank_dtype="int8")


def test_model_file_is_smaller_than_pickle(fitted, tmp_path):
    est = fitted[SoftPatchSegmenter]
    path = tmp_path / "m.skpatch"
    est.save(path)
    assert os.path.getsize(path) < len(pickle.dumps(est)) / 4


def test_load_sets_device_everywhere_and_leaves_torch_rng_alone(fitted, data, tmp_path):
    _, X = data
    path = tmp_path / "m.skpatch"
    fitted[SoftPatchClassifier].save(path)
    state = torch.get_rng_state()
    loaded = skpatch.load(path, device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert loaded.device == "cpu"
    assert {step.device for _, step in loaded.pipeline_.steps if hasattr(step, "device")} == {"cpu"}
    with pytest.raises(ValueError, match="device must be"):
        skpatch.load(path, device="gpu")


def test_pickle_and_joblib_still_work(fitted, data, tmp_path):
    _, X = data
    est = fitted[SoftPatchClassifier]
    joblib.dump(est, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").score_samples(X[:3]), est.score_samples(X[:3]))


# -- what cannot be saved ---------------------------------------------------------


def test_unstorable_attribute_is_named(fitted, data, tmp_path):
    train, _ = data
    est = _small(SoftPatchClassifier).fit(train)
    est.pipeline_[-1].extra_ = object()
    with pytest.raises(ModelFileError, match=r"pipeline_\.steps\[2\]\[1\]\.extra_.*builtins\.object"):
        est.save(tmp_path / "m.skpatch")
    assert not any(tmp_path.iterdir())  # no partial file left behind


def test_unstorable_parameters_are_named(data, tmp_path):
    train, _ = data
    est = _small(SoftPatchClassifier, random_state=np.random.RandomState(0)).fit(train)
    with pytest.raises(ModelFileError, match=r"random_state.*RandomState"):
        est.save(tmp_path / "m.skpatch")
    est = _small(SoftPatchClassifier, cache=joblib.Memory(None, verbose=0)).fit(train)
    with pytest.raises(ModelFileError, match=r"cache.*Memory"):
        est.save(tmp_path / "m.skpatch")


def test_pynndescent_index_cannot_be_saved(data, tmp_path):
    """The refusal, with an NNDescent object that was never built (building
    one compiles pynndescent with numba for most of a minute: the slow test
    below does)."""
    pynndescent = pytest.importorskip("pynndescent")
    train, _ = data
    est = _small(SoftPatchClassifier).fit(train)
    memory = est.pipeline_[-1]
    memory.set_params(search="pynndescent")
    memory.index_ = pynndescent.NNDescent.__new__(pynndescent.NNDescent)
    with pytest.raises(ModelFileError, match=r"index_.*NNDescent"):
        est.save(tmp_path / "m.skpatch")


@pytest.mark.slow  # numba compiles pynndescent for most of a minute
def test_fitted_pynndescent_index_cannot_be_saved(data, tmp_path):
    pytest.importorskip("pynndescent")
    train, _ = data
    est = _small(SoftPatchClassifier, memory__search="pynndescent").fit(train)
    with pytest.raises(ModelFileError, match=r"index_.*NNDescent"):
        est.save(tmp_path / "m.skpatch")


def test_attribute_that_is_neither_param_nor_fitted_is_refused(data, tmp_path):
    train, _ = data
    est = _small(SoftPatchClassifier).fit(train)
    est.notes = "x"
    with pytest.raises(ModelFileError, match="'notes'.*neither a parameter nor a fitted"):
        est.save(tmp_path / "m.skpatch")


def test_custom_step_class_is_refused(data, tmp_path):
    class MyCoreset(WeightedCoreset):
        pass

    train, _ = data
    est = _small(SoftPatchClassifier, memory=MyCoreset(random_state=0)).fit(train)
    with pytest.raises(ModelFileError, match="MyCoreset"):
        est.save(tmp_path / "m.skpatch")


def test_unfitted_estimator_cannot_be_saved(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SoftPatchClassifier().save(tmp_path / "m.skpatch")


# -- refused files ----------------------------------------------------------------


@pytest.fixture
def saved(fitted, tmp_path):
    path = tmp_path / "m.skpatch"
    fitted[SoftPatchClassifier].save(path)
    return path


def _members(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write(path, members):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _edit_document(path, edit, rehash=True):
    members = _members(path)
    document = json.loads(members["skpatch.json"])
    edit(document)
    if rehash:  # what an editor who knows the format would do
        tree = json.dumps(document["tree"], sort_keys=True, separators=(",", ":")).encode()
        document["metadata"]["tree_sha256"] = hashlib.sha256(tree).hexdigest()
    members["skpatch.json"] = json.dumps(document).encode()
    _write(path, members)


def _find(node, predicate):
    if isinstance(node, dict):
        if predicate(node):
            yield node
        for value in node.values():
            yield from _find(value, predicate)
    elif isinstance(node, list):
        for item in node:
            yield from _find(item, predicate)


def test_untouched_file_loads(saved):
    assert isinstance(skpatch.load(saved), SoftPatchClassifier)


def test_a_file_written_before_the_engine_parameter_runs_torch(saved):
    """PatchFeaturizer's engine defaults to "auto" now; a file without the
    parameter was written when torch was the only engine."""
    assert skpatch.load(saved).pipeline_[0].engine == "auto"

    def drop_engine(document):
        featurizers = list(_find(document["tree"], lambda n: n.get("class") == "skpatch.PatchFeaturizer"))
        assert featurizers
        for featurizer in featurizers:
            del featurizer["params"]["engine"]

    _edit_document(saved, drop_engine)
    loaded = skpatch.load(saved)
    assert loaded.pipeline_[0].engine == "torch"


def test_truncated_file_is_refused(saved):
    data = saved.read_bytes()
    for size in (len(data) // 2, len(data) - 10, 100, 0):
        saved.write_bytes(data[:size])
        with pytest.raises(ModelFileError, match="truncated or damaged|not a skpatch model"):
            skpatch.load(saved)


def test_flipped_byte_in_an_array_is_refused(saved):
    with zipfile.ZipFile(saved) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    data = bytearray(saved.read_bytes())
    # Local header: 30 bytes + name + extra field, then the stored bytes.
    name_length, extra_length = np.frombuffer(bytes(data[info.header_offset + 26 : info.header_offset + 30]), "<u2")
    start = info.header_offset + 30 + int(name_length) + int(extra_length)
    data[start + info.file_size // 2] ^= 0x01
    saved.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="damaged"):
        skpatch.load(saved)


def test_replaced_array_with_valid_checksum_is_refused(saved):
    members = _members(saved)
    name = max((n for n in members if n.startswith("arrays/")), key=lambda n: len(members[n]))
    array = np.lib.format.read_array(io.BytesIO(members[name]))
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array * 0.5)
    members[name] = buffer.getvalue()
    _write(saved, members)  # zipfile writes a valid CRC-32 for the new bytes
    with pytest.raises(ModelFileError, match="does not match its SHA-256"):
        skpatch.load(saved)


def test_edited_parameters_are_refused(saved):
    def edit(document):
        document["tree"]["fitted"]["offset_"] = 0.0

    _edit_document(saved, edit, rehash=False)
    with pytest.raises(ModelFileError, match="modified or is damaged"):
        skpatch.load(saved)


def test_other_format_version_is_refused(saved):
    def edit(document):
        document["metadata"]["format_version"] = 2

    _edit_document(saved, edit)
    with pytest.raises(ModelFileError, match="format version 2.*reads version 1"):
        skpatch.load(saved)


def test_untrusted_class_is_refused_before_anything_is_created(saved, monkeypatch):
    created = []
    original = SoftPatchClassifier.__init__
    monkeypatch.setattr(SoftPatchClassifier, "__init__", lambda self, *a, **k: created.append(1) or original(self, *a, **k))

    def edit(document):
        node = next(_find(document["tree"], lambda n: n.get("class") == "skpatch.WeightedCoreset"))
        node["class"] = "os.system"

    _edit_document(saved, edit)
    with pytest.raises(ModelFileError, match=r"'os\.system'.*may not create"):
        skpatch.load(saved)
    assert created == []


def test_extra_member_is_refused(saved):
    members = _members(saved)
    members["payload.pkl"] = pickle.dumps(print)
    _write(saved, members)
    with pytest.raises(ModelFileError, match="unexpected member 'payload.pkl'"):
        skpatch.load(saved)


def test_weights_hash_mismatch_is_refused(saved):
    def edit(document):
        node = next(_find(document["tree"], lambda n: n.get("__type__") == "backbone"))
        node["sha256"] = "0" * 64

    _edit_document(saved, edit)
    with pytest.raises(ModelFileError, match="SHA-256 of the embedded weights"):
        skpatch.load(saved)


def test_stored_weights_that_were_changed_are_refused(data, tmp_path):
    train, _ = data
    path = tmp_path / "m.skpatch"
    _small(SoftPatchClassifier, featurizer__weights=None).fit(train).save(path)
    members = _members(path)
    document = json.loads(members["skpatch.json"])
    backbone = next(_find(document["tree"], lambda n: n.get("__type__") == "backbone"))
    name = backbone["state_dict"]["conv_stem.weight"]
    array = np.lib.format.read_array(io.BytesIO(members[name]))
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array + 1)
    members[name] = buffer.getvalue()
    document["metadata"]["arrays"][name]["sha256"] = hashlib.sha256(members[name]).hexdigest()
    members["skpatch.json"] = json.dumps(document).encode()
    _write(path, members)
    with pytest.raises(ModelFileError, match="SHA-256 of the weights stored in the file"):
        skpatch.load(path)


def test_not_a_model_file_is_refused(tmp_path):
    path = tmp_path / "m.skpatch"
    with pytest.raises(ModelFileError, match="does not exist"):
        skpatch.load(path)
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="not a skpatch model file"):
        skpatch.load(path)
    _write(path, {"other.json": b"{}"})
    with pytest.raises(ModelFileError, match="not a skpatch model file"):
        skpatch.load(path)
    _write(path, {"skpatch.json": b"not json"})
    with pytest.raises(ModelFileError, match="not valid JSON"):
        skpatch.load(path)


def test_malformed_metadata_or_tree_is_refused(saved):
    data = saved.read_bytes()

    def bad_array_record(document):
        document["metadata"]["arrays"] = {name: 5 for name in document["metadata"]["arrays"]}

    def bad_tree(document):
        document["tree"]["params"] = [1, 2]

    for edit in (bad_array_record, bad_tree):
        saved.write_bytes(data)
        _edit_document(saved, edit)
        with pytest.raises(ModelFileError, match="malformed"):
            skpatch.load(saved)


def _central_directory(data):
    """(offset, end) of the zip central directory and end record in ``data``."""
    end_record = data.rfind(b"PK\x05\x06")
    return int.from_bytes(data[end_record + 16 : end_record + 20], "little"), len(data)


def test_damaged_zip_directory_is_a_model_file_error(fitted, data, tmp_path):
    """Each byte of the central directory flipped: the same model, or a ModelFileError.

    zipfile raises more than BadZipFile on a damaged directory (issue #10):
    NotImplementedError for a "zip file version" or compression method it
    lacks, RuntimeError for an "encrypted" flag, UnicodeDecodeError, a
    decompressor's error on stored bytes.
    """
    from skpatch._persist import _read

    X = data[1][:4]
    path = tmp_path / "m.skpatch"
    est = fitted[SoftPatchClassifier]
    est.save(path)
    original = path.read_bytes()
    metadata, tree, arrays = _read(path)
    start, end = _central_directory(original)
    # Every byte inverted, and every value of the first entry's "version
    # needed", flags and compression method fields (offsets 6 to 11).
    flips = [(pos, original[pos] ^ 0xFF) for pos in range(start, end)]
    flips += [(start + field, value) for field in range(6, 12) for value in range(256) if value % 7 == 0]
    readable = []
    for pos, value in flips:
        damaged = bytearray(original)
        damaged[pos] = value
        path.write_bytes(bytes(damaged))
        try:
            got = _read(path)  # everything load reads from the zip layer
        except ModelFileError:
            continue
        # Read despite the flip (a timestamp, an attribute): the very same content.
        assert got[0] == metadata and got[1] == tree, pos
        assert got[2].keys() == arrays.keys(), pos
        for name in arrays:
            assert got[2][name].dtype == arrays[name].dtype, (pos, name)
            np.testing.assert_array_equal(got[2][name], arrays[name])
        readable.append((pos, value))
    assert 0 < len(readable) < len(flips)
    # A few of the readable files through skpatch.load: bit-identical scores.
    expected = est.score_samples(X)
    for pos, value in (readable[0], readable[-1]):
        damaged = bytearray(original)
        damaged[pos] = value
        path.write_bytes(bytes(damaged))
        np.testing.assert_array_equal(skpatch.load(path).score_samples(X), expected)
    # The errors of issue #10 through skpatch.load itself.
    for field, value, match in ((6, 0xFF, "zip file version"), (8, 0x01, "encrypted"), (10, 0x63, "compression")):
        damaged = bytearray(original)
        damaged[start + field] = value
        path.write_bytes(bytes(damaged))
        with pytest.raises(ModelFileError, match=match):
            skpatch.load(path)


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)


def test_trusted_classes_are_exactly_the_listed_ones():
    assert sorted(_trusted_classes()) == sorted(TRUSTED_CLASSES)
    assert NoiseDiscriminator in _trusted_classes().values()


def test_a_file_of_an_earlier_default_step_keeps_describing_it(tmp_path):
    # Files written before BaggedCoreset became the segmenter's default hold
    # memory=None beside a fitted WeightedCoreset.
    from sklearn.base import clone

    from skpatch import SoftPatchSegmenter, WeightedCoreset
    from skpatch.datasets import make_defects

    X, _, _ = make_defects(10, image_size=32, random_state=0)
    seg = SoftPatchSegmenter(memory=WeightedCoreset(), random_state=0, device="cpu")
    seg.set_params(featurizer__image_size=32, featurizer__embed_dim=16, denoise__n_neighbors=3).fit(X)
    seg.memory = None  # as an earlier skpatch wrote it
    path = str(tmp_path / "old.skpatch")
    seg.save(path)
    loaded = skpatch.load(path)
    assert type(loaded.memory) is WeightedCoreset
    assert type(clone(loaded).fit(X).named_steps["coreset"]) is WeightedCoreset
    np.testing.assert_array_equal(loaded.score_samples(X[:2]), seg.score_samples(X[:2]))
