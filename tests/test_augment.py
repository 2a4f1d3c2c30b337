"""Every recipe's train transform survives any draw (posterize with 0 bits crashed it).

The soak draws each image recipe's full train transform, built by srv from the recipe file
(``reproduce.data.datasets.transforms_for``: crop, flip, RandAugment / AutoAugment, erasing),
20,000 times on real JPEGs of varied and extreme shapes at a small image size, seeded. Before
the guard in ``reproduce/data/augment.py`` the DeiT recipe raised ``ValueError: bits must be
between or equal to 1 and 8`` about 25 times in 20,000 draws.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch
from PIL import Image

from reproduce.data.augment import posterize
from reproduce.data.datasets import transforms_for
from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder
from reproduce.recipes.recipe import list_recipes, load_recipe

DRAWS = 20_000
IMAGE_DATASETS = ("imagefolder", "cifar10", "cifar100")
TRANSFORM_KEYS = ("aa", "color_jitter", "hflip", "scale_min", "pca_std", "reprob", "remode",
                  "recount", "interpolation", "crop_pct")
# every recipe on image data, once per distinct train transform (xiao-36gf only changes the lr)
_BY_TRANSFORM: dict[tuple[object, ...], str] = {}
for _name in list_recipes():
    _r = load_recipe(_name)[0]
    if _r.dataset in IMAGE_DATASETS:
        _BY_TRANSFORM.setdefault(tuple(getattr(_r, k) for k in TRANSFORM_KEYS), _name)
IMAGE_RECIPES = sorted(_BY_TRANSFORM.values())
# small, varied and extreme shapes (a 6-pixel-wide strip, a tiny square): crops and affine ops
# must cope with all of them
SIZES = ((24, 18), (18, 24), (6, 40), (40, 6), (9, 9), (33, 20))


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> list[Image.Image]:
    root = write_jpeg_folder(tmp_path_factory.mktemp("soak"),
                             JpegFolderSpec(classes=2, train_per_class=6, val_per_class=1,
                                            sizes=SIZES))
    images = []
    for path in sorted((root / "train").rglob("*.JPEG")):
        with Image.open(path) as im:
            images.append(im.convert("RGB"))
    return images


def test_the_soak_covers_the_paper_recipes() -> None:
    assert {"deit", "xiao"} <= set(IMAGE_RECIPES)


@pytest.mark.parametrize("name", IMAGE_RECIPES)
def test_train_transform_survives_any_draw(name: str, jpegs: list[Image.Image]) -> None:
    recipe = dataclasses.replace(load_recipe(name)[0], img_size=16)
    train_tf, _, _ = transforms_for(recipe)
    random.seed(0)  # timm's PIL ops draw from `random`, the crop and erasing from torch
    torch.manual_seed(0)
    np.random.seed(0)
    for i in range(DRAWS):
        x = train_tf(jpegs[i % len(jpegs)])
        assert x.shape == (3, 16, 16), (i, x.shape)
    assert torch.isfinite(x).all()


def test_posterize_zero_bits_is_black_as_in_tf_and_uda(jpegs: list[Image.Image]) -> None:
    img = jpegs[0]
    assert np.asarray(posterize(img, 0)).max() == 0
    assert posterize(img, 0).mode == img.mode and posterize(img, 0).size == img.size
    assert posterize(img, 8) is img
    four = np.asarray(posterize(img, 4))
    assert (four & 0x0F).max() == 0 and four.max() > 0


def test_deit_randaugment_at_magnitude_10_posterizes_to_black(jpegs: list[Image.Image]) -> None:
    """The DeiT recipe's own op at the magnitude that used to crash: a black image."""
    recipe = load_recipe("deit")[0]
    train_tf, _, _ = transforms_for(recipe)
    ops = [t for t in train_tf.transforms if hasattr(t, "ops")][0].ops
    op = next(o for o in ops if o.name == "PosterizeIncreasing")
    op.prob, op.magnitude_std, op.magnitude = 1.0, 0.0, 10.0
    assert np.asarray(op(jpegs[1])).max() == 0


def test_guard_finds_ops_inside_autoaugment_and_augmix() -> None:
    """v0 AutoAugment's ('Posterize', 0.8, 2) asks for int(2 / 10 * 4) = 0 bits at every draw
    (timm: "results in black image with Tpu posterize"); AugMix holds the same ops."""
    from timm.data.auto_augment import augment_and_mix_transform, auto_augment_transform

    from reproduce.data.augment import _augment_ops, guard_transform

    hp = {"translate_const": 10, "img_mean": (124, 116, 104)}
    img = Image.new("RGB", (20, 20), (200, 100, 50))
    random.seed(0)
    for tf in (auto_augment_transform("v0", hp), augment_and_mix_transform("augmix-m5", hp)):
        names = {o.name for o in _augment_ops(guard_transform(tf))}
        assert "Posterize" in names or "PosterizeIncreasing" in names, names
        assert all(o.aug_fn is posterize for o in _augment_ops(tf)
                   if o.name.startswith("Posterize"))
        for _ in range(200):
            tf(img)


def test_every_timm_op_accepts_every_magnitude() -> None:
    """Each op of timm's table, at magnitudes 0 to 30 (past the default cap of 10, as 'mmax'
    allows), on RGB images down to 1x1 and a constant one: no argument Pillow refuses."""
    from timm.data.auto_augment import NAME_TO_OP, AugmentOp

    from reproduce.data.augment import guard_transform

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for w, h in ((1, 1), (2, 7), (16, 12))] + [Image.new("RGB", (8, 8), (9, 9, 9))]
    hparams = {"translate_const": 100, "img_mean": (124, 116, 104), "magnitude_max": 30}
    random.seed(0)
    for name in sorted(NAME_TO_OP):
        for magnitude in np.linspace(0, 30, 61):
            op = AugmentOp(name, prob=1.0, magnitude=float(magnitude), hparams=hparams)
            guard_transform([op])
            for img in images:
                out = op(img)
                assert out.mode == "RGB" and out.size == img.size, (name, magnitude)
