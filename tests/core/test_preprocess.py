"""Bias-field correction: a smooth multiplicative field goes, the anatomy and a lesion stay."""

import numpy as np

from equicam.core.preprocess import bias_field, normalise_images


def _head(shape=(40, 48, 44)):
    """An ellipsoid of brain holding two 'tissues' (a striped pattern, 100 and 130) and a
    bright lesion of 200, zero outside."""
    z, y, x = (np.linspace(-1, 1, n) for n in shape)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    brain = zz**2 / 0.8 + yy**2 / 0.9 + xx**2 / 0.85 < 1
    tissue = np.where((np.floor(yy * 12) % 2) == 0, 100.0, 130.0)
    lesion = (zz - 0.2) ** 2 + (yy + 0.3) ** 2 + (xx - 0.1) ** 2 < 0.2**2
    volume = np.where(lesion, 200.0, tissue)
    return np.where(brain, volume, 0.0).astype(np.float32), brain, lesion, (zz, yy, xx)


def test_a_smooth_field_is_found_and_divided_out():
    clean, brain, lesion, (zz, yy, xx) = _head()
    true = np.exp(0.25 * xx + 0.15 * yy**2 - 0.2 * zz * xx)  # up to about 1.6 x across
    field = bias_field(clean * true, brain)
    ratio = (true / field)[brain]
    assert ratio.std() / ratio.mean() < 0.02
    corrected = clean * true / field
    stripes = brain & ~lesion & (clean == 100.0)
    before = (clean * true)[stripes]
    assert (
        corrected[stripes].std() / corrected[stripes].mean() < 0.3 * before.std() / before.mean()
    )
    assert corrected[lesion].mean() / corrected[stripes].mean() > 1.9  # the lesion stays bright


def test_a_volume_without_a_field_is_left_alone_and_the_field_is_one_outside():
    clean, brain, lesion, _ = _head()
    field = bias_field(clean, brain)
    assert np.all(field[~brain] == 1)
    assert np.abs(field[brain] - 1).max() < 0.05
    assert abs(np.exp(np.log(field[brain]).mean()) - 1) < 1e-4


def test_normalise_images_corrects_only_when_asked():
    clean, brain, _, (zz, yy, xx) = _head()
    lifted = clean * np.exp(0.3 * xx)
    images = {"t1": lifted, "flair": lifted * 2}
    plain = normalise_images(images)
    corrected = normalise_images(images, bias_degree=2)
    stripes = brain & (clean == 100.0)
    assert corrected["t1"][stripes].std() < 0.5 * plain["t1"][stripes].std()
    np.testing.assert_allclose(corrected["t1"], corrected["flair"], atol=1e-4)
