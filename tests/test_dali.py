"""The DALI input pipeline on DALI's CPU operators: timm's ops pixel for pixel, the timm path's
sample order and evaluation transform, exact sharded evaluation, deterministic epochs, erasing.
GPU checks run only where CUDA is present."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali")

from nvidia.dali import fn, pipeline_def, types  # noqa: E402
from PIL import Image  # noqa: E402
from timm.data.auto_augment import (  # noqa: E402
    _HPARAMS_DEFAULT,
    _RAND_INCREASING_TRANSFORMS,
    LEVEL_TO_ARG,
    NAME_TO_OP,
)

from reproduce.data import dali  # noqa: E402
from reproduce.data.dali.ops import OPS, OpContext, apply_op, level_param  # noqa: E402
from reproduce.data.dali.policies import AugmentPolicy, OpSpec, augment, parse_policy  # noqa: E402
from reproduce.data.datasets import build_datasets  # noqa: E402
from reproduce.data.jpeg_folder import JpegFolderSpec, _image, write_jpeg_folder  # noqa: E402
from reproduce.data.sampling import epoch_indices, shard_indices  # noqa: E402
from reproduce.errors import SrvError  # noqa: E402
from reproduce.recipes.recipe import Recipe, load_recipe  # noqa: E402
from reproduce.utils.distributed import DistInfo  # noqa: E402

FILL = (124, 116, 104)  # timm's img_mean for the ImageNet mean
IMG = _image(np.random.default_rng(0), 3, 10, 64, 48, 28.0)  # 48 x 64 photo-like pixels
CTX = OpContext(size=IMG.shape[:2], fill=FILL, interp=types.INTERP_LINEAR)
MAGNITUDES = (0.0, 3.0, 9.0, 9.7, 10.0)
#: the ops that follow Pillow to the pixel; the warps are bilinear (DALI has no bicubic warp)
EXACT = {"AutoContrast", "Invert", "Posterize", "PosterizeIncreasing", "PosterizeOriginal",
         "Solarize", "SolarizeIncreasing", "SolarizeAdd", "Color", "ColorIncreasing",
         "Contrast", "ContrastIncreasing", "Brightness", "BrightnessIncreasing", "Sharpness",
         "SharpnessIncreasing"}
WARPS = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}


def _run(graph: Any, batch_size: int = 1, conditionals: bool = False) -> list[np.ndarray]:
    """Build and run a one-iteration CPU pipeline; its outputs as numpy arrays."""
    pipe = pipeline_def(graph, batch_size=batch_size, num_threads=1, device_id=None, seed=7,
                        enable_conditionals=conditionals)()
    pipe.build()
    return [np.array(out.as_tensor()) for out in pipe.run()]


def _cases() -> list[tuple[str, float, int]]:
    return [(name, m, s) for name in OPS for m in MAGNITUDES
            for s in ((1, -1) if OPS[name].signed else (1,))]


@pytest.fixture(scope="module")
def dali_ops() -> dict[tuple[str, float, int, bool], np.ndarray]:
    """Every (op, magnitude, sign) on the same image, in one DALI pipeline: once with the
    magnitude and sign as numbers (a fixed policy), once as per-sample scalars (noise)."""
    cases = _cases()
    params = np.array([[m, s] for _, m, s in cases], dtype=np.float32)

    def graph() -> Any:
        x = fn.external_source(source=lambda: [IMG], batch=True, layout="HWC")
        p = fn.external_source(source=lambda: [params], batch=True)
        return tuple(out for k, (name, m, s) in enumerate(cases)
                     for out in (apply_op(name, x, m, s, CTX),
                                 apply_op(name, x, p[k, 0], p[k, 1], CTX)))

    outs = iter(_run(graph))
    return {(*case, per_sample): next(outs)[0] for case in cases for per_sample in (False, True)}


def _timm_op(name: str, m: float, s: int, resample: int) -> np.ndarray:
    """timm's op on the image, with timm's level function choosing sign ``s``."""
    hparams = dict(_HPARAMS_DEFAULT, img_mean=FILL)
    level = LEVEL_TO_ARG[name]
    args: tuple[Any, ...] = ()
    if level is not None:
        for seed in range(64):  # timm negates when random.random() > 0.5
            random.seed(seed)
            if not OPS[name].signed or (random.random() > 0.5) == (s < 0):
                break
        random.seed(seed)
        args = level(m, hparams)
    if name.startswith("Posterize") and args == (0,):
        # Pillow 13 refuses 0 bits; timm's intent (TF's shift by 8, older Pillow) is black
        return np.zeros_like(IMG)
    out = NAME_TO_OP[name](Image.fromarray(IMG), *args, fillcolor=FILL, resample=resample)
    return np.asarray(out)


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_matches_timm_pixels(name: str, dali_ops: dict) -> None:
    for (op, m, s, _), ours in dali_ops.items():
        if op != name:
            continue
        # the warps against Pillow's bilinear (DALI's warps have no bicubic): rounding only
        ref = _timm_op(name, m, s, Image.BILINEAR)
        diff = np.abs(ours.astype(int) - ref.astype(int))
        assert ours.shape == ref.shape and ours.dtype == np.uint8
        if name in EXACT:
            assert diff.max() == 0, (name, m, s)
        elif name in WARPS:
            assert diff.max() <= 1, (name, m, s)
        else:  # Equalize: OpenCV's lookup table, not Pillow's (docs/dali.md)
            assert name == "Equalize" and diff.mean() < 6, (m, diff.mean())


def test_warps_turn_the_way_timm_does(dali_ops: dict) -> None:
    """Against the recipe's bicubic, the bilinear warps differ by interpolation only: the same
    direction and fill (a wrong sign or centre would differ by tens of levels)."""
    for name in WARPS:
        ref = _timm_op(name, 9.0, -1, Image.BICUBIC)
        for per_sample in (False, True):
            ours = dali_ops[(name, 9.0, -1, per_sample)]
            assert np.abs(ours.astype(int) - ref.astype(int)).mean() < 8, name
            other = dali_ops[(name, 9.0, 1, per_sample)]
            assert np.abs(other.astype(int) - ref.astype(int)).mean() > 15, name


def test_levels_are_timms() -> None:
    hparams = dict(_HPARAMS_DEFAULT)
    for name, op in OPS.items():
        if op.level is None:
            assert LEVEL_TO_ARG[name] is None
            continue
        for m in np.linspace(0.0, 10.0, 41):
            random.seed(0)
            seen = {LEVEL_TO_ARG[name](float(m), hparams)[0] for _ in range(40)}
            ours = {level_param(name, float(m), s) for s in ((1.0, -1.0) if op.signed else (1.0,))}
            assert seen == ours, (name, m, seen, ours)


def test_policies_are_parsed_by_timm() -> None:
    ra = parse_policy("rand-m9-mstd0.5-inc1", FILL, Image.BICUBIC, 224)
    assert ra.kind == "rand" and ra.layers == 2
    assert [s.name for s in ra.choices[0]] == _RAND_INCREASING_TRANSFORMS
    assert {(s.prob, s.magnitude, s.magnitude_std, s.magnitude_max) for s in ra.choices[0]} == {
        (0.5, 9.0, 0.5, 10.0)}
    aa = parse_policy("original", FILL, Image.BICUBIC, 224)
    assert aa.kind == "auto" and len(aa.choices) == 25
    assert aa.choices[0][0] == OpSpec("PosterizeOriginal", 0.4, 8.0)
    assert len(parse_policy("v0-mstd0.5", FILL, Image.BICUBIC, 224).choices) == 25
    for bad, match in (("augmix-m5-w4-d2", "AugMix"), ("3a", "Desaturate"),
                       ("rand-m9-tweights", "weighted"), ("rand-x9", "not a timm")):
        with pytest.raises(SrvError, match=match):
            parse_policy(bad, FILL, Image.BICUBIC, 224)


def _augment_batch(policy: AugmentPolicy, images: list[np.ndarray]) -> np.ndarray:
    ctx = OpContext(size=images[0].shape[:2], fill=FILL)

    def graph() -> Any:
        x = fn.external_source(source=lambda: images, batch=True, layout="HWC")
        return augment(x, policy, ctx)

    return _run(graph, batch_size=len(images), conditionals=True)[0]


def test_magnitude_noise_and_clip_per_image() -> None:
    """Brightness (factor m/10 * 1.8 + 0.1) on grey 100 reveals each image's magnitude:
    N(9, 0.5) per image, clipped at 10, as timm's AugmentOp draws it."""
    policy = AugmentPolicy("rand", ((OpSpec("Brightness", 1.0, 9.0, 0.5),),), layers=1)
    out = _augment_batch(policy, [np.full((4, 4, 3), 100, np.uint8)] * 400)
    factor = (out[:, 0, 0, 0].astype(float) + 0.5) / 100  # truncated: +-0.005
    m = (factor - 0.1) / 1.8 * 10
    assert abs(m.mean() - 8.99) < 0.1 and 0.4 < m.std() < 0.6
    assert m.max() <= 10.03 and (m > 9.97).mean() > 0.005  # the clip at 10 is reached


def test_rand_augment_applies_each_layer_with_probability_half() -> None:
    """rand-m9-mstd0.5-inc1: 2 layers, each applied with p = 0.5 -> a quarter unchanged."""
    rng = np.random.default_rng(1)
    images = [np.clip(_image(rng, i % 10, 10, 16, 16, 20.0), 40, 200).astype(np.uint8)
              for i in range(256)]
    policy = parse_policy("rand-m9-mstd0.5-inc1", FILL, Image.BICUBIC, 16)
    out = _augment_batch(policy, images)
    unchanged = np.mean([np.array_equal(a, b) for a, b in zip(out, images, strict=True)])
    assert 0.18 < unchanged < 0.32, unchanged


def test_auto_augment_changes_images_as_often_as_timms() -> None:
    """Xiao's AutoAugment ``original``: one of 25 sub-policies per image, each op with its own
    probability; the share of images left unchanged matches timm's on the same images."""
    from timm.data.auto_augment import auto_augment_transform

    rng = np.random.default_rng(2)
    images = [_image(rng, i % 10, 10, 16, 16, 20.0) for i in range(400)]
    out = _augment_batch(parse_policy("original", FILL, Image.BICUBIC, 16), images)
    ours = np.mean([np.array_equal(a, b) for a, b in zip(out, images, strict=True)])
    timm_aa = auto_augment_transform("original", {"img_mean": FILL})
    random.seed(0)
    theirs = np.mean([np.array_equal(np.asarray(timm_aa(Image.fromarray(a))), a)
                      for a in images])
    assert abs(ours - theirs) < 0.08, (ours, theirs)


# --- loaders on a JPEG folder ----------------------------------------------------------------


@pytest.fixture(scope="module")
def jpegs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes, 8 train and 5 val images each (15: odd), square-ish small JPEGs."""
    root = tmp_path_factory.mktemp("dali") / "data"
    return write_jpeg_folder(root, JpegFolderSpec(classes=3, train_per_class=8,
                                                  val_per_class=5, sizes=((48, 48), (40, 40))))


def _recipe(jpegs: Path, **kw: Any) -> Recipe:
    base = {"dataset": "imagefolder", "data_path": str(jpegs), "img_size": 24, "batch_size": 4,
            "num_workers": 1, "aa": "", "reprob": 0.0, "hflip": 1.0, "scale_min": 1.0}
    return Recipe(**{**base, **kw})


def _timm_train_images(r: Recipe) -> torch.Tensor:
    """timm's training transform of every train image (deterministic here: whole image,
    always flipped, no augmentation)."""
    ds = build_datasets(r).train
    return torch.stack([ds[i][0] for i in range(len(ds))])  # type: ignore[arg-type]


def _match(batch: torch.Tensor, refs: torch.Tensor) -> tuple[list[int], list[float]]:
    """Index of the closest reference image for each image, and its mean difference."""
    dist = (batch[:, None] - refs[None]).abs().mean(dim=(2, 3, 4))
    best = dist.min(dim=1)
    return best.indices.tolist(), best.values.tolist()


@pytest.mark.parametrize("seed,epoch,rank,world,repeats", [
    (0, 1, 0, 1, 0), (5, 3, 1, 2, 0), (0, 2, 2, 3, 3), (1, 4, 0, 2, 3)])
def test_train_order_and_pixels_follow_the_timm_path(jpegs: Path, seed: int, epoch: int,
                                                     rank: int, world: int,
                                                     repeats: int) -> None:
    r = _recipe(jpegs, seed=seed, aug_repeats=repeats, batch_size=4 * world)
    refs = _timm_train_images(r)
    loader = dali.build_train_loader(jpegs, r, DistInfo(rank=rank, world_size=world))
    loader.set_epoch(epoch)
    batches = list(loader)
    want = epoch_indices(24, seed, epoch, rank, world, repeats)
    assert len(batches) == len(loader) == len(want) // 4
    order: list[int] = []
    diffs: list[float] = []
    for x, y in batches:
        assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32 and y.dtype == torch.int64
        idx, diff = _match(x, refs)
        order += idx
        diffs += diff
        assert y.tolist() == [i // 8 for i in idx]  # class folders of 8 images, sorted
    assert order == want[: len(order)]
    # normalised units (0.017 = one grey level): timm's pixels, but for the rare crop that
    # rounding makes one row or column short of the whole image (both RRCs allow it)
    assert float(np.median(diffs)) < 0.01 and max(diffs) < 0.1


def _timm_val(r: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    ds = build_datasets(r, train=False).val
    return (torch.stack([ds[i][0] for i in range(len(ds))]),  # type: ignore[arg-type]
            torch.tensor([ds[i][1] for i in range(len(ds))]))  # type: ignore[arg-type]


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_counts_every_image_once(jpegs: Path, world: int) -> None:
    """15 val images, batches of 2 per rank: PARTIAL last batches, no padding duplicates, and
    timm's eval transform (resize 27 bicubic, centre crop 24) to the grey level."""
    r = _recipe(jpegs, batch_size=2 * world, crop_pct=0.875)
    refs, labels = _timm_val(r)
    seen: list[int] = []
    for rank in range(world):
        loader = dali.build_val_loader(jpegs, r, DistInfo(rank=rank, world_size=world))
        xs, ys = zip(*list(loader), strict=True)
        x, y = torch.cat(xs), torch.cat(ys)
        shard = shard_indices(15, rank, world)
        assert len(xs) == len(loader) and len(y) == len(shard)
        assert (x - refs[shard]).abs().mean() < 0.01
        assert (x - refs[shard]).abs().max() < 0.1
        assert torch.equal(y, labels[shard])
        seen += shard
    assert sorted(seen) == list(range(15))


def test_eval_pipeline_is_built_once_per_run(jpegs: Path) -> None:
    """Evaluations after the first reuse the pipeline and see the same batches; one stopped
    part-way drops it, and the next evaluation is complete again (a fresh pipeline)."""
    loader = dali.build_val_loader(jpegs, _recipe(jpegs, batch_size=4), DistInfo())
    passes = [[(x.clone(), y.clone()) for x, y in loader] for _ in range(3)]
    assert loader.builds == 1 and len(passes[0]) == len(loader) == 4
    for again in passes[1:]:
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb)
                   for (xa, ya), (xb, yb) in zip(passes[0], again, strict=True))
    for _batch in loader:
        break
    after = [y for _, y in loader]
    assert loader.builds == 2
    assert torch.equal(torch.cat(after), torch.cat([y for _, y in passes[0]]))


def test_epochs_replay_exactly_with_augmentation_and_erasing(jpegs: Path) -> None:
    """DeiT's transform (RandAugment, erasing): an epoch replays after a restart, whatever the
    number of threads; the next epoch differs."""
    deit, _ = load_recipe("deit")
    r = dataclasses.replace(deit, data_path=str(jpegs), img_size=24, batch_size=8,
                            num_workers=1)
    first = dali.build_train_loader(jpegs, r, DistInfo())
    first.set_epoch(2)
    a = list(first)
    # a new process's loader, with another number of DALI threads
    restarted = dali.build_train_loader(jpegs, r, DistInfo(), num_threads=2)
    restarted.set_epoch(2)
    b = list(restarted)
    assert len(a) == len(b) == 3
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb)
               for (xa, ya), (xb, yb) in zip(a, b, strict=True))
    first.set_epoch(3)
    c = list(first)
    assert not torch.equal(a[0][0], c[0][0])


def test_erasing_acts_on_the_normalised_batch(jpegs: Path) -> None:
    """remode const erases to 0 after normalisation (timm's order): exact zeros appear in
    every image at reprob 1 and nowhere at reprob 0."""
    for prob in (1.0, 0.0):
        r = _recipe(jpegs, reprob=prob, remode="const", scale_min=0.08)
        loader = dali.build_train_loader(jpegs, r, DistInfo())
        x = torch.cat([x for x, _ in loader])
        zero_frac = (x == 0).all(dim=1).float().mean(dim=(1, 2))
        assert bool((zero_frac >= 0.02).all()) if prob else bool((zero_frac == 0).all())


def test_channels_last_reaches_the_training_batches(jpegs: Path) -> None:
    """channels_last = true: DALI's CHW batches leave the loader in the channels-last layout,
    as the timm path's do (the same values either way)."""
    batches = {}
    for layout in (False, True):
        loader = dali.build_train_loader(jpegs, _recipe(jpegs, channels_last=layout), DistInfo())
        batches[layout] = [x for x, _ in loader]
    for plain, last in zip(batches[False], batches[True], strict=True):
        assert last.is_contiguous(memory_format=torch.channels_last)
        assert not plain.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(plain, last)


def test_bad_input_is_one_clear_error(jpegs: Path, tmp_path: Path) -> None:
    with pytest.raises(SrvError, match="color_jitter without aa"):
        dali.build_train_loader(jpegs, _recipe(jpegs, color_jitter=0.4), DistInfo())
    with pytest.raises(SrvError, match="fewer than one global batch"):
        dali.build_train_loader(jpegs, _recipe(jpegs, batch_size=64), DistInfo())
    with pytest.raises(SrvError, match="AugMix"):
        dali.build_train_loader(jpegs, _recipe(jpegs, aa="augmix-m5"), DistInfo())
    with pytest.raises(SrvError, match="no data at"):
        dali.build_val_loader(tmp_path / "missing", _recipe(jpegs), DistInfo())
    assert dali.available()


def _check_worker(rank: int, world: int, init_file: str, root: str, out: str) -> None:
    """One rank of a node: builds the image list with the up-front check, counting the files
    it decodes itself."""
    import json

    import torch.distributed as dist

    from reproduce.data import images
    from reproduce.data.dali.files import image_list

    real = images.readable

    def counted(path: str) -> bool:
        with open(f"{out}.decoded.{rank}", "a") as f:
            f.write(path + "\n")
        return real(path)

    images.readable = counted  # find_unreadable's sequential path calls it per file
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        listed = image_list(Path(root), "train", check_files=1,
                            info=DistInfo(rank, world, rank, torch.device("cpu")))
        Path(f"{out}.{rank}").write_text(json.dumps(
            {"paths": list(listed.paths), "stand_in": sorted(listed.stand_in.items())}))
    finally:
        dist.destroy_process_group()


def test_one_rank_per_node_decodes_the_split_up_front(jpegs: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """2 gloo ranks on one node: local rank 0 decodes every train file once, rank 1 waits at
    the barrier and reads its cache; both get the same list and the same stand-in."""
    import json
    import shutil

    import torch.multiprocessing as mp

    data = Path(shutil.copytree(jpegs, tmp_path / "data"))
    cut = sorted((data / "train").rglob("*.JPEG"))[5]
    cut.write_bytes(cut.read_bytes()[:200])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = str(tmp_path / "rank")
    mp.spawn(_check_worker, args=(2, str(tmp_path / "init"), str(data), out), nprocs=2,
             join=True)
    decoded = Path(f"{out}.decoded.0").read_text().split()
    assert len(decoded) == len(set(decoded)) == 24  # every file once, by local rank 0
    assert not Path(f"{out}.decoded.1").exists()  # rank 1 decoded nothing
    a, b = (json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1))
    assert a == b and len(a["paths"]) == 24
    assert a["stand_in"] == [[5, 6]]  # the cut file, replaced by the next one in folder order
    assert len(list((tmp_path / "cache" / "srv" / "image-checks").glob("*.json"))) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_pipeline_matches_the_cpu_one(jpegs: Path) -> None:
    """nvJPEG decode, GPU resize / RandAugment / normalise: batches on the GPU; evaluation
    within JPEG-decoder rounding of timm's pixels."""
    gpu = DistInfo(device=torch.device("cuda", 0))
    deit, _ = load_recipe("deit")
    r = dataclasses.replace(deit, data_path=str(jpegs), img_size=24, batch_size=8,
                            num_workers=2)
    train = dali.build_train_loader(jpegs, r, gpu)
    batches = list(train)
    assert len(batches) == len(train) == 3
    for x, y in batches:
        assert x.device.type == y.device.type == "cuda"
        assert x.shape == (8, 3, 24, 24) and y.dtype == torch.int64
    refs, labels = _timm_val(_recipe(jpegs, batch_size=4))
    xs, ys = zip(*list(dali.build_val_loader(jpegs, _recipe(jpegs, batch_size=4), gpu)),
                 strict=True)
    x, y = torch.cat(xs).cpu(), torch.cat(ys).cpu()
    assert torch.equal(y, labels) and (x - refs).abs().mean() < 0.03
