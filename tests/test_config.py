"""Config: exact JSON round trip, atomic save, and early, clear validation errors."""

import dataclasses
import json
import os

import pytest

from echojax.augment import AugmentConfig
from echojax.config import Config, LossConfig, ModelConfig, OptimConfig
from echojax.data.mixture import Removal, Source


def _config(**kw):
    base = dict(
        sources=(Source("synthetic_echo/camus_like_64", alias="camus",
                        removals=(Removal(("lvm",), 0.5),)),
                 Source("synthetic_echo/unity_like_64", alias="unity", train_examples=100,
                        removals=(Removal(("la",), 1.0),))),
        resolution=64,
        model=ModelConfig(name="unet", size="tiny", overrides={"widths": [4, 8]}),
        loss=LossConfig(name="acce", dropout_rate=0.3, dropout_classes=("la",)),
        optim=OptimConfig(lr=0.1 / 3, schedule="cosine", weight_decay=3e-5, grad_clip=12.0),
        batch_size=4, epochs=3, seed=7, compute_dtype="bfloat16")
    base.update(kw)
    return Config(**base)


def test_json_round_trip_is_exact():
    cfg = _config()
    text = cfg.to_json()
    back = Config.from_json(text)
    assert back == cfg
    assert back.to_json() == text
    # Floats keep every bit (0.1/3 is not a short decimal).
    assert back.optim.lr == 0.1 / 3
    # Overrides given as a dict with a list come back hashable and equal.
    assert back.model.overrides == (("widths", (4, 8)),)
    assert json.loads(text)["model"]["overrides"] == {"widths": [4, 8]}
    hash(back)


def test_defaults_round_trip_and_missing_keys_take_defaults():
    cfg = Config(sources=(Source("tiny_echo/r16_n20", alias="tiny"),), resolution=16)
    assert Config.from_json(cfg.to_json()) == cfg
    data = cfg.to_dict()
    del data["optim"]
    assert Config.from_dict(data).optim == OptimConfig()
    assert isinstance(cfg.augment, AugmentConfig)


def test_save_is_atomic_and_loadable(tmp_path):
    cfg = _config()
    path = tmp_path / "run" / "config.json"
    cfg.save(path)
    assert Config.load(path) == cfg
    assert os.listdir(path.parent) == ["config.json"]  # no temp file left behind


@pytest.mark.parametrize("change, message", [
    (dict(loss=LossConfig(name="dice")), "unknown loss 'dice'"),
    (dict(model=ModelConfig(name="vgg")), "unknown model 'vgg'"),
    (dict(model=ModelConfig(name="unet", size="huge")), "unknown size 'huge'"),
    (dict(batch_size=0), "config.batch_size must be a positive int"),
    (dict(epochs=2.5), "config.epochs must be a positive int"),
    (dict(compute_dtype="float16"), "compute_dtype"),
    (dict(sources=()), "config.sources: a mixture needs at least one Source"),
    (dict(seed=-1), "config.seed must be a non-negative int"),
    (dict(data_seed=True), "config.data_seed must be a non-negative int or None"),
    (dict(data_seed=-2), "config.data_seed must be a non-negative int or None"),
    (dict(sources=(Source("a/b", alias="x"), Source("c/d", alias="x"))), "aliases must be unique"),
])
def test_invalid_configs_raise(change, message):
    with pytest.raises(ValueError, match=message):
        _config(**change)


@pytest.mark.parametrize("make, message", [
    (lambda: OptimConfig(schedule="step"), "optim.schedule"),
    (lambda: OptimConfig(lr=0.0), "optim.lr"),
    (lambda: OptimConfig(grad_clip=-1.0), "grad_clip"),
    (lambda: LossConfig(dropout_rate=1.5, dropout_classes=("la",)), "dropout_rate"),
    (lambda: LossConfig(dropout_rate=0.5), "needs loss.dropout_classes"),
    (lambda: LossConfig(dropout_rate=0.5, dropout_classes=("background",)), "background"),
    (lambda: LossConfig(dropout_classes=("aorta",)), "unknown class name"),
])
def test_invalid_parts_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_batch_must_divide_over_devices():
    cfg = _config(batch_size=6, eval_batch_size=8)
    cfg.check_devices(2)
    with pytest.raises(ValueError, match="batch_size=6 is not divisible by the 4 devices"):
        cfg.check_devices(4)


def test_from_json_rejects_unknown_keys_and_wrong_types():
    data = _config().to_dict()
    with pytest.raises(ValueError, match=r"unknown keys \['lr'\]"):
        Config.from_dict({**data, "lr": 0.1})
    with pytest.raises(ValueError, match="config.batch_size: expected int"):
        Config.from_dict({**data, "batch_size": "8"})
    with pytest.raises(ValueError, match="config.optim.lr: expected a number"):
        Config.from_dict({**data, "optim": {**data["optim"], "lr": True}})


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _config().seed = 3


def test_data_seed_chooses_the_mixture_and_defaults_to_seed(monkeypatch):
    from echojax import train
    from echojax.data import mixture

    assert _config(seed=7).mixture_seed == 7
    cfg = _config(seed=7, data_seed=3)
    assert cfg.mixture_seed == 3
    assert Config.from_json(cfg.to_json()) == cfg
    # Older config.json files have no data_seed: they load with the previous behaviour.
    data = _config(seed=7).to_dict()
    del data["data_seed"]
    assert Config.from_dict(data).mixture_seed == 7
    # The engine's mixtures take the data seed, not the run seed.
    seen = []
    monkeypatch.setattr(mixture, "Mixture", lambda *a, seed, **k: seen.append(seed))
    train.train_mixture(cfg)
    train.eval_mixture(cfg, "test")
    assert seen == [3, 3]

