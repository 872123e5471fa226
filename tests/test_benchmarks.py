"""Smoke tests of the benchmark scripts' command-line parsing and helpers."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from skpatch import SoftPatchClassifier, SoftPatchSegmenter

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
PROBES = BENCHMARKS / "probes"  # measured, not adopted (benchmarks/probes/README.md)


def _load(name, folder=BENCHMARKS):
    """A script of ``benchmarks/`` (or of ``folder``) as a module."""
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("noise_robustness")


@pytest.mark.parametrize(
    "text, expected",
    [("3", 3), ("0.3", 0.3), ("1e-3", 0.001), ("None", None), ("none", None),
     ("True", True), ("false", False), ("auto", "auto"), ("softpatch+", "softpatch+")],
)
def test_parse_value(bench, text, expected):
    value = bench.parse_value(text)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "spec, name, params",
    [
        ("default", "default", {}),
        ("default@0.3", "default@0.3", {"denoise__threshold": 0.3}),
        ("softpatch+@0.15", "softpatch+@0.15",
         {"denoise__method": "softpatch+", "denoise__threshold": 0.15}),
        ("gaussian@auto", "gaussian@auto",
         {"denoise__method": "gaussian", "denoise__threshold": "auto"}),
        ("g:denoise__method=gaussian, denoise__threshold=0.3,denoise__n_neighbors=10",
         "g", {"denoise__method": "gaussian", "denoise__threshold": 0.3,
               "denoise__n_neighbors": 10}),
        ("k:memory__sampling_ratio=0.05,denoise__soft_weights=False,denoise__n_components=None",
         "k", {"memory__sampling_ratio": 0.05, "denoise__soft_weights": False,
               "denoise__n_components": None}),
    ],
)
def test_parse_config(bench, spec, name, params):
    assert bench.parse_config(spec) == (name, params)


@pytest.mark.parametrize("spec", ["lofx@0.1", "unknown", ":denoise__threshold=0.1", "n:threshold"])
def test_parse_config_errors(bench, spec):
    with pytest.raises(ValueError, match="config"):
        bench.parse_config(spec)


def test_default_configs_and_command_line(bench):
    args = bench.parse_args(["--config", "g:denoise__method=gaussian", "--set",
                             "featurizer__image_size=64", "--quick"])
    names = [name for name, _ in args.parsed_configs]
    assert names[:2] == ["patchcore", "default"] and names[-1] == "g"
    for threshold in ("0.05", "0.15", "0.3", "0.5"):
        assert f"default@{threshold}" in names
    assert args.common == {"featurizer__image_size": 64}
    assert args.seeds == [0] and args.n_train == 30 and args.overlap
    assert bench.main(["--configs", "patchcore", "patchcore"]) == 2  # duplicate name


@pytest.mark.parametrize("estimator", [SoftPatchClassifier, SoftPatchSegmenter])
def test_configs_resolving_to_the_same_parameters_share_a_key(bench, estimator):
    default = estimator(random_state=0)
    threshold = default.get_params()["denoise__threshold"]
    same = estimator(random_state=0).set_params(denoise__threshold=threshold)
    other = estimator(random_state=0).set_params(denoise__threshold=0.42)
    patchcore = estimator(random_state=0).set_params(denoise="passthrough")
    assert bench.resolved_key(default) == bench.resolved_key(same)
    assert bench.resolved_key(default) != bench.resolved_key(other)
    assert bench.resolved_key(default) != bench.resolved_key(patchcore)


def test_patch_masks_match_adaptive_max_pooling(bench):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    masks = rng.random((3, 37, 50)) > 0.97
    expected = torch.nn.functional.adaptive_max_pool2d(
        torch.from_numpy(masks.astype(np.float32))[:, None], (7, 9)
    )[:, 0].numpy().reshape(3, -1) > 0
    np.testing.assert_array_equal(bench.patch_masks(masks, (7, 9)), expected)


@pytest.mark.slow
def test_tiny_run_writes_tables(bench, tmp_path):
    # End to end through the public estimators: about a minute on 2 busy cores.
    argv = [
        "--datasets", "easy_object", "--seeds", "0", "1", "--noise", "0", "0.25",
        "--configs", "patchcore", "default", "default@0.3", "--estimators", "classifier", "segmenter",
        "--n-train", "8", "--n-test", "8", "--image-size", "32",
        "--set", "featurizer__image_size=32", "--set", "featurizer__embed_dim=32",
        "--out", str(tmp_path), "--no-plot",
    ]
    assert bench.main(argv) == 0
    report = (tmp_path / "noise_robustness_easy_object.md").read_text()
    for title in ("Image AUROC (classifier)", "Pixel AUROC (segmenter)", "AUPRO (segmenter)"):
        assert title in report
    runs = (tmp_path / "noise_robustness_runs.csv").read_text().splitlines()
    # 2 seeds x 2 noise levels x 2 estimators x 3 configs, one row each.
    assert len(runs) == 1 + 2 * 2 * 2 * 3
    summary = (tmp_path / "noise_robustness_easy_object.csv").read_text()
    assert "img_auroc" in summary and "aupro" in summary


@pytest.fixture(scope="module")
def engines():
    return _load("engines")


def test_engines_scoring_stages_add_up(engines, tmp_path):
    """benchmarks/engines.py's scoring part: the torch engine runs (no recursion into the
    timing wrapper), scores are the model's, and the main thread's stages leave `other` >= 0
    although decoding runs ahead in threads."""
    from PIL import Image

    from skpatch.datasets import make_defects

    X, _, _ = make_defects(12, image_size=64, kind="object", defect_ratio=0.0, random_state=0)
    paths = []
    for i, image in enumerate(X):
        paths.append(str(tmp_path / f"{i:02d}.png"))
        Image.fromarray(image).save(paths[-1])
    clf = SoftPatchClassifier(random_state=0).set_params(
        featurizer__image_size=48, featurizer__embed_dim=64, featurizer__batch_size=4, denoise__n_neighbors=4
    ).fit(paths)
    expected = clf.score_samples(paths)
    engine, _ = engines.make_engine("channels_last", clf.pipeline_[0], 1, str(tmp_path))
    scores, total, stages = engines.score_with_stages(clf, paths, engine)
    np.testing.assert_array_equal(scores, expected)
    # Files are decoded and resized in the decoding threads.
    assert {"CNN", "pooling", "resize (threads)", "search", "decode (threads)", "decode wait"} <= set(stages)
    assert stages["other"] >= -1e-9
    main_thread = sum(v for k, v in stages.items() if not k.endswith("(threads)"))
    assert main_thread == pytest.approx(total)
    assert "_embed" not in vars(clf.pipeline_[0])  # the wrappers are gone


def test_fit_predict_batches_are_disjoint_and_contaminated(tmp_path):
    import argparse

    fit_predict = _load("fit_predict")
    args = argparse.Namespace(batch_size=10, defect_fraction=0.2, image_size=32, data=tmp_path / "absent")
    (a, labels_a), (b, labels_b) = fit_predict.batches("easy_object", 0, args)
    assert len(a) == len(b) == 10
    assert labels_a.sum() == labels_b.sum() == 2
    assert not (np.array_equal(labels_a, np.sort(labels_a)) and np.array_equal(labels_b, np.sort(labels_b)))
    fingerprints = {image.tobytes() for image in a}
    assert not fingerprints & {image.tobytes() for image in b}
    assert fit_predict.batches("bottle", 0, args) is None  # no data folder: skipped


def test_scale_memory_names_the_phase_that_set_the_peak():
    scale_memory = _load("scale_memory")
    records = [("start", 0, 800.0), ("featurize", 1, 1200.0), ("featurize", 2, 1300.0),
               ("denoise", 3, 1900.0), ("coreset", 4, 1900.0)]
    order, after, final, setter = scale_memory.summarise(records)
    assert order == ["start", "featurize", "denoise", "coreset"]
    assert after["featurize"] == 1300.0 and final == 1900.0 and setter == "denoise"


def test_removal_dilation_grows_each_removed_patch_onto_its_eight_neighbours():
    probe = _load("removal_dilation", PROBES)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 7 * 7, 4))
    X[3, 24] += 50.0  # one far outlier at the centre of image 3's 7 x 7 grid
    params = dict(threshold=1.5 / X[:, :, 0].size, random_state=0)
    raw = probe.VARIANTS["raw"](**params).fit(X, grid_shape=(7, 7))
    grown = probe.VARIANTS["dil"](**params).fit(X, grid_shape=(7, 7))
    assert (~raw.kept_).sum() == 1 and not raw.kept_[3, 24]
    removed = ~grown.kept_.reshape(8, 7, 7)
    expected = np.zeros_like(removed)
    expected[3, 2:5, 2:5] = True
    np.testing.assert_array_equal(removed, expected)


def _vouching_by_brute_force(Z, kept, grid, window, m):
    n, n_patches, _ = Z.shape
    h, w = grid
    out = np.empty((n, n_patches))
    for a in range(n):
        for p in range(n_patches):
            i, j = divmod(p, w)
            nearest = []
            for b in range(n):
                if b == a:
                    continue
                near = [np.linalg.norm(Z[a, p] - Z[b, q]) for q in range(n_patches) if kept[b, q]
                        and (window < 0 or (abs(q // w - i) <= window and abs(q % w - j) <= window))]
                nearest.append(min(near, default=np.inf))
            out[a, p] = sorted(nearest)[m - 1]
    return out


@pytest.mark.parametrize("window", [0, 1, -1])
def test_removal_vouch_distances_match_brute_force(window):
    torch = pytest.importorskip("torch")
    probe = _load("removal_vouch", PROBES)
    rng = np.random.default_rng(0)
    n, grid, m = 5, (4, 6), 2
    Z = rng.normal(size=(n, 24, 3)).astype(np.float32)
    kept = rng.random((n, 24)) > 0.3
    expected = _vouching_by_brute_force(Z, kept, grid, window, m)
    if window >= 0:
        got = probe.window_vouching(torch.from_numpy(Z), torch.from_numpy(kept), grid, window, m).numpy()
    else:
        image = torch.arange(n).repeat_interleave(24)
        every = torch.arange(n * 24)
        reference = torch.nonzero(torch.from_numpy(kept.reshape(-1))).squeeze(1)
        got = probe.anywhere_vouching(torch.from_numpy(Z.reshape(-1, 3)), image, every, reference, m).numpy()
        got = got.reshape(n, 24)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_dask_bottle_coverage_radius_is_blocked_exactly():
    pytest.importorskip("torch")
    dask_bottle = _load("dask_bottle")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(5, 6, 3)).astype(np.float32)
    kept = rng.random((5, 6)) > 0.3
    bank = rng.normal(size=(4, 3)).astype(np.float32)
    flat = features.reshape(-1, 3)[kept.reshape(-1)]
    expected = np.sqrt(((flat[:, None] - bank[None]) ** 2).sum(-1)).min(1).max()
    assert dask_bottle.coverage_radius(features, kept, bank, block=7) == pytest.approx(expected, rel=1e-5)
    assert dask_bottle.coverage_radius(features, kept, bank[:1]) >= expected  # fewer centres, larger radius


def test_patchcore_is_one_bank_without_removal(bench):
    from skpatch import WeightedCoreset

    name, params = bench.parse_config("patchcore")
    assert name == "patchcore" and params["denoise"] == "passthrough"
    # Also for the segmenter, whose default memory is bagged.
    assert type(params["memory"]) is WeightedCoreset


def test_step_objects_in_configs(bench):
    from skpatch import BaggedCoreset

    name, params = bench.parse_config("bag:memory=BaggedCoreset(),memory__max_samples=0.3")
    assert isinstance(params["memory"], BaggedCoreset) and params["memory__max_samples"] == 0.3
    est = SoftPatchClassifier().set_params(**params)
    assert est.get_params()["memory__max_samples"] == 0.3
    # A bagged and a single memory never share a fit.
    assert bench.resolved_key(est) != bench.resolved_key(SoftPatchClassifier())


def test_pixel_f1(bench):
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, :2] = True  # 8 defect pixels
    predicted = np.zeros_like(masks)
    predicted[0, 0] = True  # 4 of them, no false positive
    assert bench.pixel_f1(masks, predicted) == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert bench.pixel_f1(masks, np.zeros_like(masks)) == 0.0


def test_readme_figure_draws_the_named_configs(tmp_path):
    pytest.importorskip("matplotlib")
    figure = _load("readme_figure")
    summary = tmp_path / "s.csv"
    lines = ["dataset,estimator,metric,config,noise,mean,std,min,max,n_seeds"]
    for noise in (0.0, 0.2):
        lines.append(f"tire,classifier,img_auroc,default,{noise},0.8,0.01,0.79,0.81,3")
        lines.append(f"tire,segmenter,pix_auroc,default,{noise},0.98,0.002,0.97,0.99,3")
    lines.append("tire,segmenter,pix_auroc,default,avg,0.98,0.002,0.97,0.99,3")
    summary.write_text("\n".join(lines) + "\n")
    table = figure.read_summary(summary)
    assert [v[0] for v in table[("segmenter", "pix_auroc", "default")]] == [0.0, 0.2]
    out = tmp_path / "f.png"
    assert figure.main([str(summary), "--configs", "default=now", "--output", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert figure.main([str(summary), "--configs", "missing", "--output", str(out)]) == 2
