"""The recipes' sources as data: every value a source defines, where it says so, and how to read
the same value off what srv's engine builds.

One table per recipe feeds both ``tests/test_fidelity.py`` (every fact must hold, or the known
difference it names must still be the one srv has) and ``srv recipes NAME`` (each value with its
source). The source values are written here from the sources themselves, never read from the
recipe files, and every measurement reads the built objects of
:func:`reproduce.training.builders.build_parts` (optimizer param groups, the schedule's lr in the
optimizer, the transforms, the EMA acting on a probe model, the initialised model), not the TOML
text.

Sources (line numbers at these commits):

* DeiT: facebookresearch/deit@7e160fe (``main.py``, ``engine.py``, ``datasets.py``,
  ``samplers.py``, ``README_deit.md``), with the timm it pins (``requirements.txt``: timm==0.3.2,
  pytorch-image-models@6504a428).
* Xiao et al.: facebookresearch/pycls@206d0db, branch ``vitconfigs`` (the branch with their
  configs): ``configs/vitconv_baselines/vit/ViT-{P,C}-*GF_adamw_*gpus.yaml`` and ``pycls/``.
"""

from __future__ import annotations

import math

import torch

from reproduce.training.fidelity.facts import (
    Built,
    Difference,
    Fact,
    RecipeSource,
    _aa_warp,
    _absent,
    _adam,
    _auto_augment_policy,
    _crop,
    _drop_path,
    _dropout,
    _ema_every,
    _erasing,
    _eval,
    _flip,
    _lighting,
    _mixup,
    _normalize,
    _rand_augment,
    _repeats,
)

__all__ = ["SOURCES", "source_for", "deit_epoch_lr", "pycls_epoch_lr", "pycls_ema_alpha",
           "source_bn_batch", "bn_batch_warning"]

DEIT = "deit@7e160fe"
TIMM032 = "timm 0.3.2 (pytorch-image-models@6504a428)"
PYCLS = "pycls@206d0db (vitconfigs)"
XIAO_YAML = "ViT-C-4.0GF_adamw_8gpus.yaml"


# --- DeiT -----------------------------------------------------------------------------------------

_D = dict(epochs=300, batch=4 * 256, lr=5e-4, lr_batch=512.0, warmup_epochs=5, warmup_lr=1e-6,
          min_lr=1e-5, wd=0.05, ema=0.99996)


def deit_epoch_lr(epoch: int, base: float = _D["lr"] * _D["batch"] / _D["lr_batch"]) -> float:
    """DeiT's lr of (1-based) ``epoch``: ``lr_scheduler.step(epoch)`` runs after 0-based epoch
    ``epoch`` (main.py:420-432), so 0-based epoch ``e`` runs at ``sched(e - 1)``, epoch 0 at the
    constructor's ``warmup_lr``; ``sched`` is timm 0.3.2's cosine (cosine_lr.py:68-95, t_initial
    300, warmup_t 5, cycle_limit 1, built by scheduler_factory.py create_scheduler)."""
    e0 = epoch - 1
    if e0 == 0:
        return _D["warmup_lr"]
    t = e0 - 1
    if t < _D["warmup_epochs"]:
        return _D["warmup_lr"] + t * (base - _D["warmup_lr"]) / _D["warmup_epochs"]
    if t >= _D["epochs"]:
        return _D["min_lr"]
    return _D["min_lr"] + 0.5 * (base - _D["min_lr"]) * (1 + math.cos(math.pi * t / _D["epochs"]))


_DEIT_EPOCHS = (1, 2, 3, 6, 7, 8, 151, 300)

DEIT_SOURCE = RecipeSource(
    recipe="deit",
    model="vit-s-patch",
    source=f"Touvron et al. 2021; {DEIT} main.py, engine.py, datasets.py with {TIMM032}",
    facts=(
        Fact("schedule length (epochs)", _D["epochs"], f"{DEIT} main.py:35 --epochs 300; the "
             "10 cooldown epochs (main.py:88) never run", ("epochs",),
             lambda b: b.schedule_epochs()),
        Fact("global batch", _D["batch"], f"{DEIT} README_deit.md:216: 4 GPUs x --batch-size 256",
             ("batch_size",), lambda b: b.parts.cfg.derived(1).global_batch),
        Fact("peak lr (5e-4 x 1024 / 512)", _D["lr"] * _D["batch"] / _D["lr_batch"],
             f"{DEIT} main.py:71 --lr 5e-4; main.py:349-351 x batch x world / 512",
             ("lr", "lr_base_batch", "lr_scaling"), lambda b: b.parts.schedule.peak[0]),
        Fact("optimizer, betas, eps", ("AdamW", (0.9, 0.999), 1e-8),
             f"{DEIT} main.py:56 --opt adamw, main.py:58 --opt-eps 1e-8; {TIMM032} "
             "optim_factory.py AdamW default betas", ("opt", "opt_eps"), _adam),
        Fact("weight decay of weight matrices", _D["wd"], f"{DEIT} main.py:66 --weight-decay "
             "0.05", ("weight_decay",), lambda b: b.group_wd("blocks.0.attn.qkv.weight")),
        Fact("weight decay of biases and norm weights", (0.0,), f"{TIMM032} optim_factory.py:"
             "25-37 add_weight_decay (1-D and .bias skipped)", ("weight_decay",),
             lambda b: b.wd_of_1d()),
        Fact("weight decay of pos_embed, cls_token", (0.0, 0.0), f"{TIMM032} optim_factory.py:31 "
             "skip_list = model.no_weight_decay() {pos_embed, cls_token}", ("wd_pos_cls",),
             lambda b: (b.group_wd("pos_embed"), b.group_wd("cls_token"))),
        Fact(f"lr of the first update of epochs {', '.join(map(str, _DEIT_EPOCHS))}",
             tuple(deit_epoch_lr(e) for e in _DEIT_EPOCHS),
             f"{DEIT} main.py:432 lr_scheduler.step(epoch) after each epoch; main.py:79,81,86 "
             f"warmup-lr 1e-6, min-lr 1e-5, 5 warmup epochs; {TIMM032} cosine_lr.py:68-95",
             ("sched", "sched_step", "warmup_epochs", "warmup_lr", "min_lr", "warmup_factor",
              "min_lr_factor"), lambda b: tuple(b.lr_of_epoch(e) for e in _DEIT_EPOCHS)),
        Fact("lr within an epoch (epoch 7: updates 0, 600, 1250)", (deit_epoch_lr(7),) * 3,
             f"{DEIT} main.py:432 (the scheduler steps per epoch only)", ("sched_step",),
             lambda b: tuple(b.lr_of_epoch(7, u) for u in (0, 600, 1250))),
        Fact("EMA: weight of the new value per update (1 - decay)", 1 - _D["ema"],
             f"{DEIT} main.py:52 --model-ema-decay 0.99996; {TIMM032} model_ema.py:79",
             ("ema_decay", "ema_alpha"), lambda b: b.ema_probe(b.step_of(100, 7))[1], rel=1e-6),
        Fact("EMA acts after every update, from the first (iterations 0, 1, 31 of epochs 1, 100)",
             ("update",) * 6, f"{DEIT} engine.py:71-72 model_ema.update(model) every step",
             ("ema_update_period", "ema_warmup_copy"),
             lambda b: _ema_every(b, 1, (0, 1, 31)) + _ema_every(b, 100, (0, 1, 31))),
        Fact("train crop (size, scale, ratio, interpolation)",
             ((224, 224), (0.08, 1.0), (0.75, 1.3333), "bicubic"),
             f"{DEIT} datasets.py:82-91 create_transform, main.py:42,102", ("img_size",
             "scale_min", "interpolation"), _crop),
        Fact("horizontal flip", 0.5, f"{DEIT} datasets.py:82 (timm's hflip default)", ("hflip",),
             _flip),
        Fact("RandAugment", "rand-m9-mstd0.5-inc1-n2, bicubic", f"{DEIT} main.py:98 --aa; "
             "main.py:102 interpolation", ("aa",), _rand_augment),
        Fact("colour jitter and PCA lighting", (), f"{DEIT} main.py:96 --color-jitter 0.3, which "
             "timm drops beside RandAugment; no lighting", ("color_jitter", "pca_std"),
             _absent("ColorJitter", "Lighting")),
        Fact("normalisation mean / std", ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
             f"{DEIT} datasets.py:108 IMAGENET_DEFAULT_MEAN / STD", (), _normalize),
        Fact("random erasing (prob, mode, count)", (0.25, "pixel", 1),
             f"{DEIT} main.py:118-122", ("reprob", "remode", "recount"), _erasing),
        Fact("eval resize, interpolation, crop", (256, "bicubic", 224),
             f"{DEIT} datasets.py:101-105 Resize(int(224 / 0.875), interpolation=3), "
             "CenterCrop(224); main.py:174", ("crop_pct", "interpolation"), _eval),
        Fact("Mixup / CutMix (mixup, cutmix, prob, switch, mode, smoothing)",
             (0.8, 1.0, 1.0, 0.5, "batch", 0.1), f"{DEIT} main.py:128-138, 101; main.py:257-260",
             ("mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "smoothing"), _mixup),
        Fact("loss", "SoftTargetCrossEntropy", f"{DEIT} main.py:361",
             (), lambda b: type(b.parts.criterion).__name__),
        Fact("drop path (first block, last block)", (0.0, 0.1), f"{DEIT} main.py:46; "
             f"{TIMM032} vision_transformer.py:225 linspace(0, rate, depth)", ("drop_path",),
             _drop_path, rel=1e-6),
        Fact("dropout", 0.0, f"{DEIT} main.py:44 --drop 0", ("drop",), _dropout),
        Fact("repeated augmentation under DDP", ("RepeatAugSampler", 3),
             f"{DEIT} main.py:215-218 RASampler, samplers.py:16 num_repeats=3", ("aug_repeats",),
             _repeats),
        Fact("mixed precision", "fp16", f"{DEIT} engine.py:46 torch.cuda.amp.autocast, "
             "main.py:353 NativeScaler", ("amp",), lambda b: b.r.amp),
        Fact("gradient clipping", 0.0, f"{DEIT} main.py:62 --clip-grad None", ("clip_grad",),
             lambda b: b.r.clip_grad),
        Fact("init: cls token std", 0.02, f"{TIMM032} vision_transformer.py:242 "
             "trunc_normal_(cls_token, std=.02)", (), lambda b: b.std_of("cls_token"), rel=0.15),
        Fact("init: Linear weight std, bias", (0.02, 0.0), f"{TIMM032} vision_transformer.py:"
             "245-248 trunc_normal_(std=.02), bias 0", (),
             lambda b: (b.std_of("blocks.0.mlp.fc1.weight"),
                        b.absmax_of("blocks.0.mlp.fc1.bias")), rel=0.03),
        Fact("init: pos_embed std", 0.02, f"{TIMM032} vision_transformer.py:241", (),
             lambda b: b.std_of("pos_embed"), rel=0.05),
    ),
    differences=(
        Difference("timm version", f"{TIMM032}", "timm 1.0's RandAugment, RandomErasing, Mixup, "
                   "RandomResizedCrop and cosine scheduler with the same arguments; their "
                   "implementations are not audited line by line against 0.3.2"),
        Difference("resume", f"{DEIT} main.py:411 lr_scheduler.step(start_epoch) on resume "
                   "(one epoch ahead of an uninterrupted run)", "a resumed run gets the lr of "
                   "an uninterrupted one"),
        Difference("repeated augmentation on one process", f"{DEIT} main.py:213-225 "
                   "(RandomSampler when not distributed)", "the same: aug_repeats acts only "
                   "under DDP, and a one-process run says so"),
    ),
    choices={
        "dataset": "ImageNet is an image folder (--data)",
        "num_workers": "10 loader workers (DeiT: --num_workers 10)",
        "seed": "seed 0 (DeiT's --seed default)",
        "sync_bn": "the DeiT bodies have no BN; the conv-stems' BN stays per rank",
        "ema_alpha": "DeiT's EMA is a plain decay (ema_decay)",
    },
)


# --- Xiao et al. (pycls) -------------------------------------------------------------------------

_X = dict(epochs=400, batch=2048, lr=1e-3, lr_36=7e-4, warmup_epochs=5, warmup_factor=0.1,
          min_lr=0.005, wd=0.24, ema_alpha=1e-5, ema_period=32, pca_std=0.1)


def pycls_epoch_lr(epoch: int, base: float = _X["lr"]) -> float:
    """pycls's lr of (1-based) ``epoch``: ``get_epoch_lr(cur_epoch)`` set at the start of
    0-based epoch ``cur_epoch`` (trainer.py:91-92), cosine with a relative floor times a linear
    warmup factor (optimizer.py:89-92, 110-119)."""
    e = epoch - 1
    cos = 0.5 * (1.0 + math.cos(math.pi * e / _X["epochs"]))
    lr = ((1.0 - _X["min_lr"]) * cos + _X["min_lr"]) * base
    if e < _X["warmup_epochs"]:
        alpha = e / _X["warmup_epochs"]
        lr *= _X["warmup_factor"] * (1.0 - alpha) + alpha
    return lr


def pycls_ema_alpha() -> float:
    """pycls net.py:124-125: EMA_ALPHA x BATCH_SIZE / MAX_EPOCH x EMA_UPDATE_PERIOD."""
    return min(1.0, _X["ema_alpha"] * _X["batch"] / _X["epochs"] * _X["ema_period"])


_XIAO_EPOCHS = (1, 2, 5, 6, 7, 201, 400)


def _lr_36gf(b: Built) -> tuple[float, ...]:
    """The lr ``srv train vitp-36gf`` / ``vitc-36gf`` uses with their default recipe."""
    from reproduce.training.config import resolve_config, scaled_lr

    return tuple(scaled_lr(resolve_config(m).recipe) for m in ("vitp-36gf", "vitc-36gf"))


def _sweep_lr(b: Built) -> tuple[float, float]:
    parts = b.other(lr=8e-3)
    return parts.schedule.lr_at(1), parts.schedule.lr_at(_X["epochs"])


def _pycls_patchify_std(b: Built) -> float:
    model = b.other("vitp-1gf").model
    return float(model.patch_embed.stem[0].conv.weight.detach().std())


def _xiao(recipe: str, base: float, config: str) -> RecipeSource:
    """Xiao et al.'s recipe at a base lr (1e-3, or 7e-4 for the 36GF configs)."""
    return RecipeSource(
        recipe=recipe,
        model="vitc-1gf",
        source=f"Xiao et al. 2021; {PYCLS}: configs/vitconv_baselines/vit/{config} and pycls/",
        facts=(
            Fact("schedule length (epochs)", _X["epochs"],
                 f"{PYCLS} {XIAO_YAML} OPTIM.MAX_EPOCH 400",
                 ("epochs",), lambda b: b.schedule_epochs()),
            Fact("global batch", _X["batch"], f"{PYCLS} {XIAO_YAML} TRAIN.BATCH_SIZE 2048",
                 ("batch_size",), lambda b: b.parts.cfg.derived(1).global_batch),
            Fact("peak lr", base, f"{PYCLS} {config} OPTIM.BASE_LR {base:g} at batch 2048",
                 ("lr", "lr_base_batch", "lr_scaling"), lambda b: b.parts.schedule.peak[0]),
            Fact("default recipe's peak lr of vitp-36gf, vitc-36gf", (_X["lr_36"],) * 2,
                 f"{PYCLS} ViT-{{P,C}}-36GF_adamw_32gpus.yaml OPTIM.BASE_LR 0.0007 (srv: recipe "
                 "xiao-36gf, their default)", ("lr",), _lr_36gf),
            Fact("optimizer, betas, eps", ("AdamW", (0.9, 0.999), 1e-8),
                 f"{PYCLS} optimizer.py:66-72 torch.optim.AdamW, config.py:273-274 BETA1 / BETA2",
                 ("opt", "opt_eps"), _adam),
            Fact("weight decay of weight matrices", _X["wd"], f"{PYCLS} {XIAO_YAML} "
                 "OPTIM.WEIGHT_DECAY 0.24", ("weight_decay",),
                 lambda b: b.group_wd("blocks.0.attn.qkv.weight")),
            Fact("weight decay of BN / LN weights and biases", (0.0,), f"{PYCLS} {XIAO_YAML} "
                 "BN / LN / BIAS_CUSTOM_WEIGHT_DECAY 0; optimizer.py:39-47", ("weight_decay",),
                 lambda b: b.wd_of_1d()),
            Fact("weight decay of pos_embed, cls_token", (_X["wd"], _X["wd"]), f"{PYCLS} "
                 "optimizer.py:39-47: only names with bn / ln / bias are exempt", ("wd_pos_cls",),
                 lambda b: (b.group_wd("pos_embed"), b.group_wd("cls_token"))),
            Fact(f"lr of the first update of epochs {', '.join(map(str, _XIAO_EPOCHS))}",
                 tuple(pycls_epoch_lr(e, base) for e in _XIAO_EPOCHS),
                 f"{PYCLS} trainer.py:91-92 (set per epoch); optimizer.py:89-92, 110-119; "
                 "config.py:284 WARMUP_FACTOR 0.1; MIN_LR 0.005, WARMUP_EPOCHS 5",
                 ("sched", "sched_step", "warmup_epochs", "warmup_factor", "warmup_lr", "min_lr",
                  "min_lr_factor"), lambda b: tuple(b.lr_of_epoch(e) for e in _XIAO_EPOCHS)),
            Fact("lr within an epoch (epoch 6: updates 0, 300, 624)",
                 (pycls_epoch_lr(6, base),) * 3,
                 f"{PYCLS} trainer.py:91-92 (once per epoch)", ("sched_step",),
                 lambda b: tuple(b.lr_of_epoch(6, u) for u in (0, 300, 624))),
            Fact("warmup start and last lr scale with the lr (a sweep at 8e-3)",
                 (pycls_epoch_lr(1, 8e-3), pycls_epoch_lr(_X["epochs"], 8e-3)),
                 f"{PYCLS} optimizer.py:113 (x BASE_LR), config.py:247 MIN_LR x BASE_LR",
                 ("warmup_factor", "min_lr_factor"), _sweep_lr),
            Fact("EMA: weight of the new value per EMA update (alpha)", pycls_ema_alpha(),
                 f"{PYCLS} net.py:124-125 EMA_ALPHA 1e-5 x 2048 / 400 x 32",
                 ("ema_alpha", "ema_decay"), lambda b: b.ema_probe(b.step_of(6, 0))[1], rel=1e-6),
            Fact("EMA updates at iterations 0, 32, 64 of an epoch, not 1, 31 (epoch 6)",
                 ("update", "skip", "skip", "update", "update"),
                 f"{PYCLS} net.py:120-122 cur_iter % EMA_UPDATE_PERIOD (32)",
                 ("ema_update_period",),
                 lambda b: _ema_every(b, 6, (0, 1, 31, 32, 64))),
            Fact("EMA copies the weights during the 5 warmup epochs (epochs 1, 5; then 6)",
                 ("copy", "copy", "update"), f"{PYCLS} net.py:127 alpha = 1 while cur_epoch < "
                 "WARMUP_EPOCHS", ("ema_warmup_copy",),
                 lambda b: (b.ema_probe(b.step_of(1, 0))[0], b.ema_probe(b.step_of(5, 32))[0],
                            b.ema_probe(b.step_of(6, 32))[0])),
            Fact("EMA decay per optimizer update (derived)", (1 - pycls_ema_alpha()) ** (1 / 32),
                 f"{PYCLS} net.py:118-131 (alpha every 32 updates)", ("ema_alpha",),
                 lambda b: b.parts.ema.effective_decay(), rel=1e-9),
            Fact("train crop (size, scale, ratio, interpolation)",
                 ((224, 224), (0.08, 1.0), (0.75, 1.3333), "bilinear"),
                 f"{PYCLS} transforms.py:32-47 random_sized_crop (area 0.08-1, aspect 3/4-4/3, "
                 "cv2.INTER_LINEAR)", ("img_size", "scale_min", "interpolation"), _crop),
            Fact("aspect-ratio sampling of the crop", "uniform in [3/4, 4/3], w / h swapped with "
                 "prob 0.5", f"{PYCLS} transforms.py:38-42", (),
                 lambda b: ("log-uniform in [3/4, 4/3]" if type(b.train_steps()[0]).__name__ ==
                            "RandomResizedCropAndInterpolation" else "?"),
                 srv="log-uniform in [3/4, 4/3]", why="timm's RandomResizedCrop"),
            Fact("horizontal flip", 0.5, f"{PYCLS} imagenet.py:79", ("hflip",), _flip),
            Fact("AutoAugment policy", "v0", f"{PYCLS} config key TRAIN.AUGMENT AutoAugment; "
                 "augment.py:26-38 (numerically timm's 'v0'), 122-149", ("aa",),
                 _auto_augment_policy),
            Fact("AutoAugment warps: interpolation, fill", ("bilinear", (128, 128, 128)),
                 f"{PYCLS} augment.py:62 WARP_PARAMS", ("interpolation",), _aa_warp,
                 srv=("bilinear", (124, 116, 104)), why="timm fills with the normalisation mean"),
            Fact("PCA lighting (std, eigenvalues, position)",
                 (_X["pca_std"], (0.2175, 0.0188, 0.0045),
                  "MaybeToTensor -> Lighting -> Normalize"),
                 f"{PYCLS} config.py:328 TRAIN.PCA_STD 0.1; imagenet.py:28-35, 81; "
                 "transforms.py:65-73", ("pca_std",), _lighting),
            Fact("colour jitter and random erasing", (), f"{PYCLS} imagenet.py:76-81 (neither)",
                 ("color_jitter", "reprob"), _absent("ColorJitter", "RandomErasing")),
            Fact("normalisation mean / std", ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                 f"{PYCLS} imagenet.py:25-26", (), _normalize),
            Fact("eval resize, interpolation, crop", (256, "bilinear", 224),
                 f"{PYCLS} {XIAO_YAML} TEST.IM_SIZE 256; transforms.py:18-29 (cv2.INTER_LINEAR)",
                 ("crop_pct", "interpolation"), _eval),
            Fact("Mixup / CutMix (mixup, cutmix, prob, switch, mode, smoothing)",
                 (0.8, 1.0, 1.0, 0.5, "batch", 0.1), f"{PYCLS} {XIAO_YAML} TRAIN.MIXUP_ALPHA, "
                 "CUTMIX_ALPHA, LABEL_SMOOTHING; net.py:89-115 (one draw per batch, 50-50)",
                 ("mixup", "cutmix", "mixup_prob", "mixup_switch_prob", "smoothing"), _mixup),
            Fact("loss", "SoftTargetCrossEntropy", f"{PYCLS} net.py:77-86 SoftCrossEntropyLoss",
                 (), lambda b: type(b.parts.criterion).__name__),
            Fact("drop path (first block, last block)", (0.0, 0.0), f"{PYCLS} vit.py:73-86 (none)",
                 ("drop_path",), _drop_path),
            Fact("dropout", 0.0, f"{PYCLS} vit.py (none)", ("drop",), _dropout),
            Fact("repeated augmentation under DDP", ("DistributedSampler", 1),
                 f"{PYCLS} loader.py (DistributedSampler)", ("aug_repeats",), _repeats),
            Fact("mixed precision", "fp16", f"{PYCLS} {XIAO_YAML} TRAIN.MIXED_PRECISION True; "
                 "trainer.py:106-113 autocast + GradScaler", ("amp",), lambda b: b.r.amp),
            Fact("gradient clipping", 0.0, f"{PYCLS} trainer.py:110-113 (none)", ("clip_grad",),
                 lambda b: b.r.clip_grad),
            Fact("init: head weight and bias", 0.0, f"{PYCLS} vit.py:299-302 zeros", (),
                 lambda b: max(b.absmax_of("head.weight"), b.absmax_of("head.bias"))),
            Fact("init: cls token, pos_embed std", (0.0, 0.02), f"{PYCLS} vit.py:213 zeros, 309 "
                 "normal(0.02)", (), lambda b: (b.absmax_of("cls_token"), b.std_of("pos_embed")),
                 rel=0.05),
            Fact("init: attention qkv std (Xavier uniform), bias",
                 (math.sqrt(2 / (192 + 576)), 0.0),
                 f"{PYCLS} vit.py:284-288", (), lambda b: (b.std_of("blocks.0.attn.qkv.weight"),
                                                           b.absmax_of("blocks.0.attn.qkv.bias")),
                 rel=0.03),
            Fact("init: attention out-projection std (PyTorch default), bias",
                 (1 / math.sqrt(3 * 192), 0.0), f"{PYCLS} vit.py:289-292", (),
                 lambda b: (b.std_of("blocks.0.attn.proj.weight"),
                            b.absmax_of("blocks.0.attn.proj.bias")), rel=0.05),
            Fact("init: MLP std (Xavier uniform), bias std", (math.sqrt(2 / (192 + 576)), 1e-6),
                 f"{PYCLS} vit.py:295-298", (),
                 lambda b: (b.std_of("blocks.0.mlp.fc1.weight"), b.std_of("blocks.0.mlp.fc1.bias")),
                 rel=0.1),
            Fact("init: second stem conv std (PyTorch default, not He fan-out)",
                 1 / math.sqrt(3 * 24 * 9), f"{PYCLS} vit.py:277-279 'default pytorch init for "
                 "other conv layers in the C-stem'", (),
                 lambda b: b.std_of("patch_embed.stem.1.conv.weight"), rel=0.05),
            Fact("init: last (1x1) stem conv std, bias", (math.sqrt(2 / 192), 0.0),
                 f"{PYCLS} vit.py:273-276 normal(0, sqrt(2 / C_out))", (),
                 lambda b: (b.std_of("patch_embed.stem.4.conv.weight"),
                            b.absmax_of("patch_embed.stem.4.conv.bias")), rel=0.05),
            Fact("init: patchify conv std (ViT_P)", math.sqrt(1 / (3 * 16 * 16)),
                 f"{PYCLS} vit.py:270-272 trunc_normal(sqrt(1 / fan_in))", (), _pycls_patchify_std,
                 rel=0.05),
            Fact("LayerNorm eps, BatchNorm eps / momentum", (1e-6, 1e-5, 0.1),
                 f"{PYCLS} {XIAO_YAML} LN.EPS 1e-6; config.py:213-216 BN.EPS, BN.MOM", (),
                 lambda b: (b.model.blocks[0].norm1.eps, b.model.patch_embed.stem[0].norm.eps,
                            b.model.patch_embed.stem[0].norm.momentum)),
        ),
        differences=(
            Difference("precise BN statistics", f"{PYCLS} config.py:219-220 BN.USE_PRECISE_STATS "
                       "True (8,192 images), trainer.py:197-199, for the model and the EMA after "
                       "every epoch", "running BN statistics (only the ViT_C stems have BN)"),
            Difference("image decoding and resizing", f"{PYCLS} imagenet.py:93, "
                       "transforms.py:23-47 OpenCV, cv2.INTER_LINEAR (no antialiasing)",
                       "PIL, bilinear (antialiased when downscaling)"),
            Difference("crop fallback after 10 tries", f"{PYCLS} transforms.py:48 scale and centre "
                       "crop", "timm: a centre crop of the clamped aspect ratio"),
            Difference("posterize with 0 bits", f"{PYCLS} augment.py:58-59, 76 POSTERIZE_MIN = 1",
                       "timm's v0 policy can draw 0 bits (see srv's posterize handling)"),
            Difference("input channel order", f"{PYCLS} imagenet.py:88 BGR", "RGB (a permutation "
                       "of the input channels: no effect on training from scratch)"),
            Difference("Mixup / CutMix implementation", f"{PYCLS} net.py:89-115", "timm's Mixup in "
                       "batch mode with the same parameters (the box rounding differs)"),
        ),
        choices={
            "dataset": "ImageNet is an image folder (--data)",
            "num_workers": "DATA_LOADER.NUM_WORKERS 10",
            "seed": "RNG_SEED is pycls's default; srv's seed 0",
            "ema_decay": "pycls's EMA is given by ema_alpha",
            "sync_bn": "pycls keeps BN statistics per GPU (and recomputes them precisely)",
        },
    )


XIAO_SOURCE = _xiao("xiao", _X["lr"], XIAO_YAML)
XIAO_36_SOURCE = _xiao("xiao-36gf", _X["lr_36"], "ViT-C-36GF_adamw_32gpus.yaml")


SOURCES: dict[str, RecipeSource] = {
    s.recipe: s for s in (DEIT_SOURCE, XIAO_SOURCE, XIAO_36_SOURCE)}


def source_for(recipe: str) -> RecipeSource | None:
    """The source table of a recipe (None for srv's own, e.g. ``mini``)."""
    return SOURCES.get(recipe)


# --- the BatchNorm batch ------------------------------------------------------------------------

#: the per-GPU batch of each source's own launch, by recipe and model size: what a BatchNorm in
#: the stem normalised over (neither DeiT nor pycls uses SyncBN), with where it is written
_SOURCE_PER_GPU: dict[tuple[str, str], tuple[int, str]] = {
    ("deit", "t"): (256, f"{DEIT} README_deit.md:216: 4 GPUs x --batch-size 256"),
    ("deit", "s"): (256, f"{DEIT} README_deit.md:216: 4 GPUs x --batch-size 256"),
    ("deit", "b"): (64, f"{DEIT} README_deit.md: DeiT-B on 2 nodes x 8 GPUs at main.py's "
                        f"--batch-size 64"),
    **{(recipe, gf): (2048 // gpus, f"{PYCLS} ViT-C-{name}GF_adamw_{gpus}gpus.yaml: "
                                     f"TRAIN.BATCH_SIZE 2048 over NUM_GPUS {gpus}")
       for recipe in ("xiao", "xiao-36gf")
       for gf, name, gpus in (("1gf", "1.0", 8), ("4gf", "4.0", 8), ("18gf", "18", 16),
                              ("36gf", "36", 32))},
}


def source_bn_batch(recipe: str, model: str) -> tuple[int, str] | None:
    """The recipe source's per-GPU batch for ``model`` (a catalogue name) and where it is
    written; None where the source trained no such model (or for srv's own recipes)."""
    size = model.split("-")[1] if model.count("-") >= 1 else ""
    return _SOURCE_PER_GPU.get((recipe, size))


def bn_batch_warning(recipe: str, model: str, net: torch.nn.Module, micro_batch: int,
                     world_size: int, accum_steps: int) -> str | None:
    """A warning when ``net`` has BatchNorm (a BN stem) and normalises over another batch per
    device than the recipe source did: the batch statistics, and with them the results, follow
    the launch (global batch / world size / accum_steps), not only the global batch."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return None
    source = source_bn_batch(recipe, model)
    if source is None or source[0] == micro_batch:
        return None
    return (f"{model}'s BatchNorm normalises over {micro_batch} images per device (global "
            f"batch {micro_batch * world_size * accum_steps} / {world_size} ranks / "
            f"accum_steps {accum_steps}), the {recipe} source's over {source[0]} per GPU "
            f"({source[1]}): its batch statistics differ from the source's; a launch with "
            f"micro-batches of {source[0]} matches it")
