"""skpatch.dask on a real two-process LocalCluster (skipped without skpatch[dask])."""

import gc
import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import joblib  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

import skpatch  # noqa: E402
import skpatch.dask  # noqa: E402
from skpatch import PatchFeaturizer, SoftPatchClassifier, SoftPatchSegmenter, WeightedCoreset  # noqa: E402
from skpatch._threads import torch_threads  # noqa: E402
from skpatch.metrics import image_auroc_scorer  # noqa: E402

from .conftest import BOTTLE  # noqa: E402

# The workers run one torch thread each (threads_per_worker=1): single-process
# references are computed with one thread too, since a convolution's rounding
# may depend on the thread count.
ONE = 1


class CountingFeaturizer(PatchFeaturizer):
    """A PatchFeaturizer that appends a line to $SKPATCH_TEST_CNN_LOG per CNN run.

    Module-level, so the worker processes unpickle it by reference.
    """

    def transform(self, X):
        log = os.environ.get("SKPATCH_TEST_CNN_LOG")
        if log:
            with open(log, "a") as file:
                file.write(f"{os.getpid()}\n")
        return super().transform(X)


def _setenv(name, value):
    os.environ[name] = value


def _kill_worker(client):
    """SIGKILL (no goodbye) one worker; return its address."""
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    os.kill(pids[victim], signal.SIGKILL)
    return victim


def _cnn_runs(path):
    if not os.path.exists(path):
        return 0
    with open(path) as file:
        return len(file.read().split())


def _small(cls, featurizer=None, **params):
    est = cls(featurizer=featurizer, random_state=0, **params)
    est.set_params(featurizer__image_size=64, featurizer__embed_dim=64, featurizer__batch_size=4)
    return est if params.get("denoise") == "passthrough" else est.set_params(denoise__n_neighbors=4)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def own_client():
    """A two-worker cluster of its own, for a test that kills a worker.

    The tests ask whether skpatch's results survive the kill, not whether
    the nanny's new worker joins: in a full-suite CI run the replacement
    once never joined within 240 s, and on the shared cluster the missing
    worker then failed the tests that came after.
    """
    cluster = distributed.LocalCluster(  # a free port: the shared cluster holds the default one
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    )
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def data():
    from skpatch.datasets import make_defects

    X, y, masks = make_defects(40, image_size=64, kind="object", defect_ratio=0.25, random_state=0)
    return X, y, masks


@pytest.fixture(scope="module")
def clf(data):
    X, y, _ = data
    with torch_threads(ONE):
        return _small(SoftPatchClassifier).fit(X[y == 0][:20])


@pytest.fixture(scope="module")
def paths(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    out = []
    for i, image in enumerate(data[0]):
        path = str(folder / f"{i:03d}.png")
        Image.fromarray(image).save(path)
        out.append(path)
    return out


# -- scoring -------------------------------------------------------------------------


def test_score_images_is_single_process_score_samples(client, clf, data, paths):
    X = data[0]
    with torch_threads(ONE):
        reference = clf.score_samples(X)
    # Arrays and file paths, partitions of 8 images (2 batches of 4), in input order.
    got = skpatch.dask.score_images(clf, X, client=client, partition_size=8)
    assert got.dtype == reference.dtype and np.array_equal(got, reference)
    assert np.array_equal(skpatch.dask.score_images(clf, paths, client=client, partition_size=6), reference)
    # The model reached each worker process once, as a model file.
    loads = client.run(lambda: __import__("skpatch.dask._scoring").dask._scoring.LOADS["count"])
    assert sorted(loads.values()) == [1, 1]


def test_dask_array_input(client, clf, data):
    import dask.array as da

    X = data[0][:20]
    with torch_threads(ONE):
        reference = clf.score_samples(X)
    images = da.from_array(X, chunks=(5, 64, 64, 3))  # rechunked to partitions of 8
    assert np.array_equal(skpatch.dask.score_images(clf, images, client=client, partition_size=8), reference)


def test_segmenter_maps_written_per_image(client, data, tmp_path):
    X, y, _ = data
    with torch_threads(ONE):
        seg = _small(SoftPatchSegmenter).fit(X[y == 0][:12])
        reference = seg.score_samples(X[:10])
    maps = skpatch.dask.score_images(seg, X[:10], client=client, partition_size=4)
    assert maps.shape == (10, 64, 64) and np.array_equal(maps, reference)
    written = skpatch.dask.save_maps(seg, X[:10], tmp_path / "maps", client=client, partition_size=4)
    assert [os.path.basename(p) for p in written] == [f"{i:08d}.npy" for i in range(10)]
    assert np.array_equal(np.stack([np.load(p) for p in written]), -reference)


def test_killed_worker_loses_nothing(own_client, clf, paths):
    client = own_client
    with torch_threads(ONE):
        reference = clf.score_samples(paths)
    model = skpatch.dask._scoring.ShippedModel(clf, client)
    parts = skpatch.dask._partitions.partitions(paths, 4)
    futures = [
        client.submit(skpatch.dask._scoring.score_partition, model.digest, model.future, part, retries=0, pure=False)
        for part in parts
    ]
    # Kill (SIGKILL, no goodbye) a worker that is busy with this run, once the run is under way.
    next(distributed.as_completed(futures))
    busy = {addr: keys for addr, keys in client.processing().items() if keys}
    assert busy, "every task finished before the kill"
    victim = sorted(busy)[0]
    pids = client.run(os.getpid)
    os.kill(pids[victim], signal.SIGKILL)
    got = np.concatenate(client.gather(futures))
    assert np.array_equal(got, reference)


def test_bad_inputs(client, clf, data):
    X = data[0]
    with pytest.raises(TypeError, match="file paths"):
        skpatch.dask.score_images(clf, list(X[:3]), client=client)
    with pytest.raises(TypeError, match="SoftPatchClassifier"):
        skpatch.dask.score_images(PatchFeaturizer(), X[:3], client=client)
    with pytest.raises(ValueError, match="empty"):
        skpatch.dask.score_images(clf, [], client=client)
    with pytest.raises(ValueError, match="partition_size"):
        skpatch.dask.score_images(clf, X[:3], client=client, partition_size=0)
    with pytest.raises(ValueError, match=r"\(n, H, W, C\)"):
        skpatch.dask.score_images(clf, X[0], client=client)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        skpatch.dask.score_images(SoftPatchClassifier(), X[:3], client=client)
    with pytest.raises(TypeError, match="SoftPatchSegmenter"):
        skpatch.dask.save_maps(clf, X[:3], "unused", client=client)
    with pytest.raises(ValueError, match="oversample"):
        skpatch.dask.fit(SoftPatchClassifier(), X[:3], client=client, oversample=0.5)
    with pytest.raises(ValueError, match="shuffle"):
        skpatch.dask.fit(SoftPatchClassifier(), X[:3], client=client, shuffle="disk")
    with pytest.raises(TypeError, match="default steps"):
        skpatch.dask.fit(SoftPatchClassifier(featurizer=CountingFeaturizer()), X[:3], client=client)


# -- threads, search and the shared cache ------------------------------------------------


def test_worker_threads_follow_the_worker(client):
    from skpatch._threads import effective_n_jobs

    def threads():
        with torch_threads(None):
            import torch

            inside = torch.get_num_threads()
        return effective_n_jobs(None), effective_n_jobs(-1), inside

    # threads_per_worker=1, on a machine with more cores than that.
    assert client.submit(threads, pure=False).result() == (1, 1, 1)
    assert effective_n_jobs(None) >= 1  # outside a worker: torch's own setting


def test_grid_search_runs_cnn_once_per_fold(client, data, tmp_path):
    X, y, _ = data
    log = str(tmp_path / "cnn.log")
    client.run(_setenv, "SKPATCH_TEST_CNN_LOG", log)
    normal, defective = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
    folds = [
        (normal[:12], np.concatenate([normal[12:20], defective[:5]])),
        (normal[8:20], np.concatenate([normal[:8], defective[5:]])),
    ]
    grid = GridSearchCV(
        _small(SoftPatchClassifier, CountingFeaturizer(), cache=str(tmp_path / "cache")),
        {"denoise__threshold": [0.0, 0.05, 0.1, 0.2]},
        scoring=image_auroc_scorer, cv=folds, refit=False,
    )
    with joblib.parallel_backend("dask"):
        grid.fit(X, y)
    assert len(grid.cv_results_["params"]) == 4 and np.isfinite(grid.cv_results_["mean_test_score"]).all()
    # 4 candidates x 2 folds ran 2 at a time; the CNN ran once per fold and set:
    # 2 folds x (training + test images).
    assert _cnn_runs(log) == 4
    assert len(os.listdir(tmp_path / "cache" / "skpatch-locks")) >= 4


def test_second_client_sees_cached_features(client, data, tmp_path):
    X, y, _ = data
    log = str(tmp_path / "cnn.log")
    client.run(_setenv, "SKPATCH_TEST_CNN_LOG", log)
    cache = str(tmp_path / "cache")

    def fit_scores(images):
        est = _small(SoftPatchClassifier, CountingFeaturizer(), cache=cache).fit(images)
        return est.pipeline_[1].scores_

    first = client.submit(fit_scores, X[:16], pure=False).result()
    assert _cnn_runs(log) == 1
    with distributed.Client(client.cluster.scheduler_address, set_as_default=False) as other:
        second = other.submit(fit_scores, X[:16], pure=False).result()
    assert _cnn_runs(log) == 1 and np.array_equal(first, second)


# -- distributed fit -------------------------------------------------------------------------


def _coverage_radius(features, kept, bank):
    """Largest distance of a kept training patch to its nearest memory patch."""
    flat = features.reshape(-1, features.shape[-1])[kept.reshape(-1)]
    d2 = (flat**2).sum(1)[:, None] - 2 * flat @ bank.T + (bank**2).sum(1)[None, :]
    return float(np.sqrt(np.maximum(d2.min(1), 0)).max())


def test_distributed_fit_matches_single_process(client, data, tmp_path):
    X, y, _ = data
    train = X[:24]  # some defective images among them
    with torch_threads(ONE):
        single = _small(SoftPatchClassifier).fit(train)
    est = _small(SoftPatchClassifier)
    fitted = skpatch.dask.fit(est, train, client=client, partition_size=8)
    assert fitted is est
    # Features and the discriminator are identical.
    features = skpatch.dask.featurize(fitted.pipeline_[0], train, client=client, partition_size=8).compute()
    with torch_threads(ONE):
        assert np.array_equal(features, single.pipeline_[0].transform(train))
    for name in ("scores_", "kept_", "weights_", "score_threshold_"):
        assert np.array_equal(getattr(fitted.pipeline_[1], name), getattr(single.pipeline_[1], name)), name
    # The composable coreset: same size, coverage radius within 1.25x.
    bank, reference = fitted.pipeline_[2].memory_bank_, single.pipeline_[2].memory_bank_
    assert bank.shape == reference.shape
    kept = single.pipeline_[1].kept_
    assert _coverage_radius(features, kept, bank) <= 1.25 * _coverage_radius(features, kept, reference)
    # An ordinary fitted estimator: it scores, saves and loads like one.
    from skpatch.metrics import image_auroc

    scores = fitted.score_samples(X)
    with torch_threads(ONE):
        single_scores = single.score_samples(X)
    assert image_auroc(y, -scores) >= image_auroc(y, -single_scores) - 0.05
    assert fitted.train_scores_.shape == (24,) and np.isfinite(fitted.offset_)
    fitted.save(tmp_path / "m.skpatch")
    assert np.array_equal(skpatch.load(tmp_path / "m.skpatch").score_samples(X), scores)


def test_one_partition_fit_agrees_with_fit_where_documented(client, data):
    """One partition of images: what skpatch.dask.fit's docstring says it
    reproduces (the fitted featurizer, the discriminator) equals estimator.fit
    bit for bit, and the rest has the single-process form (the bank's size,
    the pipeline's steps, the training attributes)."""
    X = data[0][:8]
    denoise = skpatch.NoiseDiscriminator(max_shift=1, dilation=1)
    with torch_threads(ONE):
        single = _small(SoftPatchClassifier, denoise=denoise).fit(X)
    fitted = skpatch.dask.fit(_small(SoftPatchClassifier, denoise=denoise), X, client=client, partition_size=8)
    assert [name for name, _ in fitted.pipeline_.steps] == [name for name, _ in single.pipeline_.steps]
    assert fitted.pipeline_[0].feature_shape_ == single.pipeline_[0].feature_shape_
    for name in ("n_features_in_", "n_neighbors_", "shifts_", "scores_", "kept_", "weights_", "score_threshold_"):
        assert np.array_equal(getattr(fitted.pipeline_[1], name), getattr(single.pipeline_[1], name)), name
    bank, reference = fitted.pipeline_[2], single.pipeline_[2]
    assert bank.memory_bank_.shape == reference.memory_bank_.shape
    assert set(bank.sample_indices_) <= set(np.flatnonzero(single.pipeline_[1].kept_))
    assert np.array_equal(bank.memory_images_, bank.sample_indices_ // 64)
    assert np.array_equal(bank.memory_weights_, single.pipeline_[1].weights_.reshape(-1)[bank.sample_indices_])
    assert fitted.n_train_images_ == 8 and fitted.image_size_ == single.image_size_
    assert fitted.train_scores_.shape == (8,) and np.isfinite(fitted.offset_)


def test_fit_features_by_position_are_the_features(client, data):
    """The fit's shuffle: position chunks of all images, assembled from the
    partitions' pieces, equal to ``transform`` bit for bit, several per worker."""
    train = data[0][:20]
    featurizer = _small(SoftPatchClassifier)._make_pipeline()[0].fit(train[:1])
    parts = skpatch.dask._partitions.partitions(train, 8)  # 8, 8, 4 images
    by_position, _ = skpatch.dask._features.featurize_by_position(featurizer, parts, client)
    n_patches = featurizer.feature_shape_[0] * featurizer.feature_shape_[1]
    assert by_position.chunks[0] == (20,) and by_position.chunks[2] == (featurizer.embed_dim,)
    assert sum(by_position.chunks[1]) == n_patches
    assert len(by_position.chunks[1]) >= skpatch.dask._features.CHUNKS_PER_WORKER * len(client.nthreads())
    # Spread evenly: each worker holds the chunks placed on it.
    distributed.wait(by_position)
    placed = [sorted(client.who_has(by_position)[key]) for key in by_position.__dask_keys__()[0][0]]
    workers = sorted(client.nthreads())
    assert [holders[0] for holders in placed] == [workers[c % 2] for c in range(len(placed))]
    with torch_threads(ONE):
        # Rows of patches, chunked by position, of the features on their grid.
        assert np.array_equal(by_position.compute(), featurizer.transform(train).reshape(len(train), -1, featurizer.embed_dim))


def test_featurize_survives_a_killed_worker(own_client, data):
    """Persisted features whose worker dies are recomputed: the featurizer
    is a task's result, not scattered data that the scheduler cannot rebuild."""
    client = own_client
    X = data[0][:12]
    featurizer = _small(SoftPatchClassifier)._make_pipeline()[0]
    features = skpatch.dask.featurize(featurizer, X, client=client, partition_size=4)
    distributed.wait(features)
    gc.collect()
    time.sleep(1.0)  # the scheduler drops the extra copies of what it no longer needs
    _kill_worker(client)
    with torch_threads(ONE):
        assert np.array_equal(features.compute(), featurizer.transform(X))


def test_worker_killed_during_fit_loses_nothing(own_client, data, monkeypatch):
    """A worker killed (SIGKILL) after the shuffle, while the fit holds only
    the position chunks: the lost chunks are recomputed, and the fit is the
    same as without the kill."""
    client = own_client
    X = data[0][:16]
    reference = skpatch.dask.fit(_small(SoftPatchClassifier), X, client=client, partition_size=4)
    share = skpatch.dask._fit.worker_working_memory
    killed = []

    def kill_then_share(client):  # called once the shuffle is under way
        distributed.wait(list(client.futures.values()))
        gc.collect()
        time.sleep(1.0)  # the scheduler forgets what the client no longer holds
        killed.append(_kill_worker(client))
        return share(client)

    monkeypatch.setattr(skpatch.dask._fit, "worker_working_memory", kill_then_share)
    fitted = skpatch.dask.fit(_small(SoftPatchClassifier), X, client=client, partition_size=4)
    assert killed
    assert np.array_equal(fitted.pipeline_[1].kept_, reference.pipeline_[1].kept_)
    assert np.array_equal(fitted.pipeline_[2].memory_bank_, reference.pipeline_[2].memory_bank_)
    assert np.array_equal(fitted.train_scores_, reference.train_scores_)


@pytest.mark.parametrize("method", ["nearest", "softpatch+"])
def test_distributed_discriminator_methods(client, data, method):
    """Median-scaled weights (a second order statistic) and the gathered softpatch+ ranks."""
    X = data[0][:12]
    denoise = skpatch.NoiseDiscriminator(method, soft_weights=method == "nearest")
    with torch_threads(ONE):
        single = _small(SoftPatchClassifier, denoise=denoise).fit(X)
    # The disk-backed p2p shuffle gives the same as the task-based one.
    shuffle = "p2p" if method == "nearest" else "tasks"
    fitted = skpatch.dask.fit(
        _small(SoftPatchClassifier, denoise=denoise), X, client=client, partition_size=4, shuffle=shuffle
    )
    for name in ("scores_", "kept_", "weights_", "score_threshold_"):
        assert np.array_equal(getattr(fitted.pipeline_[1], name), getattr(single.pipeline_[1], name)), name


@pytest.mark.parametrize(
    "method, chunk_bytes, dilation", [("lof", None, 0), ("softpatch+", 20_000, 0), ("lof", None, 1)]
)
def test_distributed_aligned_discriminator(client, data, method, chunk_bytes, dilation, monkeypatch):
    """max_shift on the workers: the same shifts and scores as one process
    (with small chunks: several image chunks and many position chunks), and
    the removal grown across positions (``dilation``) the same too."""
    if chunk_bytes is not None:
        monkeypatch.setattr(skpatch.dask._features, "POSITION_CHUNK_BYTES", chunk_bytes)
    from skpatch.datasets import make_defect_dataset

    boards = make_defect_dataset(12, 2, image_size=64, kind="board", variation=3.0, random_state=0)
    X = boards.train_images
    denoise = skpatch.NoiseDiscriminator(method, max_shift=2, dilation=dilation)
    with torch_threads(ONE):
        single = _small(SoftPatchClassifier, denoise=denoise).fit(X)
    assert (single.pipeline_[1].shifts_ != 0).any()  # the boards sit differently
    assert (1 - single.pipeline_[1].kept_.mean() > 0.2) == bool(dilation)  # threshold 0.15, grown
    fitted = skpatch.dask.fit(_small(SoftPatchClassifier, denoise=denoise), X, client=client, partition_size=4)
    for name in ("shifts_", "scores_", "kept_", "weights_", "score_threshold_"):
        assert np.array_equal(getattr(fitted.pipeline_[1], name), getattr(single.pipeline_[1], name)), name


def test_workers_share_the_working_memory(client, data):
    """Each worker's chunks get ``working_memory / n_workers``; the fit does not depend on it."""
    from sklearn import config_context

    with config_context(working_memory=64):
        assert skpatch.dask._fit.worker_working_memory(client) == 32
    X = data[0][:12]
    reference = skpatch.dask.fit(_small(SoftPatchClassifier), X, client=client, partition_size=4)
    with config_context(working_memory=1):  # tiny chunks everywhere on the workers
        fitted = skpatch.dask.fit(_small(SoftPatchClassifier), X, client=client, partition_size=4)
    assert np.array_equal(fitted.pipeline_[1].kept_, reference.pipeline_[1].kept_)
    assert np.array_equal(fitted.pipeline_[2].memory_bank_, reference.pipeline_[2].memory_bank_)
    assert np.array_equal(fitted.train_scores_, reference.train_scores_)


def test_distributed_fit_segmenter_and_passthrough(client, data):
    X, y, masks = data
    # The segmenter's default BaggedCoreset is refused, saying what to do.
    with pytest.raises(TypeError, match="BaggedCoreset.*memory=WeightedCoreset"):
        skpatch.dask.fit(_small(SoftPatchSegmenter), X[:16], client=client, partition_size=8)
    seg = _small(SoftPatchSegmenter, memory=WeightedCoreset())
    seg = skpatch.dask.fit(seg, X[:16], client=client, partition_size=8)
    maps = seg.score_samples(X[:8])
    assert maps.shape == (8, 64, 64) and np.isfinite(seg.offset_)
    import dask.array as da

    # PatchCore, from a dask array of images.
    patchcore = _small(SoftPatchClassifier, denoise="passthrough")
    images = da.from_array(X[:16], chunks=(6, 64, 64, 3))
    patchcore = skpatch.dask.fit(patchcore, images, client=client, partition_size=4)
    assert len(patchcore.pipeline_[2].memory_bank_) == int(np.ceil(0.1 * 16 * 64))
    assert patchcore.image_size_ == (64, 64) and patchcore.n_train_images_ == 16


@pytest.mark.data
@pytest.mark.skipif(not os.path.isdir(BOTTLE), reason="MVTec AD bottle data not available")
def test_bottle_distributed_fit(client):
    from skpatch.datasets import load_mvtec
    from skpatch.metrics import image_auroc

    data = load_mvtec(BOTTLE)
    single = SoftPatchClassifier(random_state=0).fit(data.train_images)
    fitted = skpatch.dask.fit(SoftPatchClassifier(random_state=0), list(data.train_images), client=client)
    auroc = image_auroc(data.test_labels, -fitted.score_samples(data.test_images))
    reference = image_auroc(data.test_labels, -single.score_samples(data.test_images))
    assert auroc >= 0.98 and abs(auroc - reference) <= 0.005
