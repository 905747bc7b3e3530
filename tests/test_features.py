"""Batched frame features agree with per-clip librosa, and the KLD built on them behaves as defined."""

import numpy as np
import pytest

from musicpeft.metrics.features import FeatureConfig, extract_features, librosa_features, n_frames
from musicpeft.metrics.kld import KLDConfig, ReferenceDistribution, kl_divergence, kld_scores, smooth

SR = 22050


def _test_clips():
    """Clips that exercise every feature: tone + noise, odd-length noise, leading silence, square wave, chirp."""
    rng = np.random.default_rng(0)
    t = np.arange(SR * 2) / SR
    return [
        0.3 * np.sin(2 * np.pi * 440 * t) * np.exp(-t) + 0.05 * rng.standard_normal(t.size),
        0.2 * rng.standard_normal(SR + 117),
        np.concatenate([np.zeros(5000), 0.5 * np.sin(2 * np.pi * 220 * t[:20000])]),
        0.4 * np.sign(np.sin(2 * np.pi * 3 * t[: SR // 2])),
        0.3 * np.sin(2 * np.pi * (100 + 2000 * t) * t),
    ]


def test_batched_features_match_per_clip_librosa():
    config = FeatureConfig(sample_rate=SR)
    clips = _test_clips()
    batched = extract_features(clips, config, batch_size=3)
    for i, clip in enumerate(clips):
        ref = librosa_features(clip, config)
        got = batched[i]
        assert got.shape == ref.shape == (len(config.feature_names), n_frames(len(clip), config))
        for row, name in enumerate(config.feature_names):
            scale = max(np.abs(ref[row]).max(), 1e-12)
            rel = np.abs(got[row] - ref[row]).max() / scale
            assert rel < 1e-4, f"clip {i} feature {name}: relative error {rel:.2e}"


def test_batching_does_not_change_features():
    clips = _test_clips()
    one = extract_features(clips, batch_size=1)
    many = extract_features(clips, batch_size=8)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_feature_rows_are_what_their_names_say():
    config = FeatureConfig(sample_rate=SR)
    t = np.arange(SR) / SR
    (feats,) = extract_features([0.5 * np.sin(2 * np.pi * 440 * t)], config)
    rows = dict(zip(config.feature_names, feats, strict=True))
    mid = slice(5, -5)  # away from the zero-padded edges
    assert np.allclose(rows["spectral_centroid"][mid], 440, rtol=0.05)
    assert np.allclose(rows["zcr"][mid], 2 * 440 / SR, rtol=0.02)
    chroma = feats[config.family_rows["chroma"]][:, mid]
    assert np.all(chroma.argmax(axis=0) == 9)  # A


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sample_rate=0), "sample_rate"),
        (dict(n_fft=1025), "even"),
        (dict(n_mfcc=200), "n_mfcc"),
        (dict(roll_percent=1.5), "roll_percent"),
    ],
)
def test_feature_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureConfig(**kwargs)


def test_extract_features_rejects_bad_clips():
    with pytest.raises(ValueError, match=r"clip 1 must be a non-empty 1-D array"):
        extract_features([np.ones(4000), np.ones((2, 4000))])


def _frames(rng, n_clips, mean, dims=36, frames=200):
    return [rng.normal(mean, 1.0, size=(dims, frames)) for _ in range(n_clips)]


def test_kld_of_a_set_against_itself_is_zero_and_grows_with_shift():
    rng = np.random.default_rng(1)
    config = FeatureConfig()
    ref_feats = _frames(rng, 6, 0.0)
    ref = ReferenceDistribution.fit(ref_feats, config)
    same = kld_scores(ref_feats, ref)
    assert same["kld"] == pytest.approx(0.0, abs=1e-12)
    assert all(v == pytest.approx(0.0, abs=1e-12) for v in same["kld_per_feature"].values())
    assert all(v > 0 for v in same["kld_per_item"])  # one clip covers less than the whole set
    values = [kld_scores(_frames(rng, 6, shift), ref)["kld"] for shift in (0.0, 0.5, 1.5, 3.0)]
    assert values == sorted(values) and values[-1] > 1.0


def test_reference_distribution_bins_and_smoothing():
    rng = np.random.default_rng(2)
    config = FeatureConfig()
    kcfg = KLDConfig(n_bins=16)
    feats = _frames(rng, 3, 0.0)
    feats[0][5] = 7.0  # a constant row in one clip still bins; others spread
    ref = ReferenceDistribution.fit(feats, config, kcfg)
    assert ref.probs.shape == (36, 16)
    np.testing.assert_allclose(ref.probs.sum(axis=1), 1.0)
    assert np.all(ref.probs > 0)
    hist = ref.histogram(rng.normal(100.0, 1.0, size=(36, 50)))  # far outside: clipped into the last bin
    assert np.all(hist[:, -1] == 1.0)
    # Disjoint supports stay finite thanks to smoothing: KL <= ln(1 / p_min).
    kl = kl_divergence(smooth(hist, kcfg.eps), ref.probs)
    assert np.all(np.isfinite(kl)) and np.all(kl <= -np.log(ref.probs.min(axis=1)) + 1e-9)


def test_degenerate_reference_row_gets_a_unit_range():
    config = FeatureConfig()
    feats = [np.zeros((36, 40))]
    ref = ReferenceDistribution.fit(feats, config)
    np.testing.assert_allclose(ref.hi - ref.lo, 1.0)
    assert kld_scores(feats, ref)["kld"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(n_bins=1), "n_bins"), (dict(low_quantile=0.6, high_quantile=0.5), "quantiles"), (dict(eps=0), "eps")],
)
def test_kld_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KLDConfig(**kwargs)
