"""aBCE's two decision rules at inference (``LossConfig.abce_inference``): the sigmoid
rule (default) and the paper's softmax (Islam et al., MELBA 2026, Sec. 6.1), on
hand-computed logits, through the config and through evaluation."""

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fixtures_engine import tiny_config
from flax import nnx

from echojax import evaluate as evaluate_lib
from echojax import files, inference, losses, metrics, train
from echojax import labels as labels_lib
from echojax.config import Config, LossConfig
from echojax.data import pipeline

pytestmark = pytest.mark.xdist_group("engine")
# One row of four pixels, C = 4 (background, LV, LVM, LA).
LOGITS = jnp.array([[[
    [5.0, -1.0, -2.0, -3.0],   # agree: no sigmoid > 0.5 and z_0 largest -> 0
    [5.0, 2.0, -1.0, -1.0],    # differ: sigmoid(z_1) > 0.5 -> 1; z_0 largest -> 0
    [-3.0, -1.0, -2.0, -0.5],  # differ: no sigmoid > 0.5 -> 0; z_3 largest -> 3
    [0.1, 0.5, 2.0, 1.0],      # agree: z_2 largest of all -> 2
]]])


def test_rules_on_hand_computed_logits():
    sigmoid = losses.get("abce").predict(LOGITS)
    softmax = losses.get("abce", abce_inference="softmax").predict(LOGITS)
    assert sigmoid.dtype == softmax.dtype == jnp.int32
    assert sigmoid.tolist() == [[[0, 1, 0, 2]]]
    assert softmax.tolist() == [[[0, 0, 3, 2]]]
    # softmax is argmax over all C logits as output, channel 0 included
    np.testing.assert_array_equal(softmax, jnp.argmax(jax.nn.softmax(LOGITS), -1))


def test_rule_does_not_change_the_training_loss():
    sig, soft = losses.get("abce"), losses.get("abce", abce_inference="softmax")
    assert sig is losses.ABCE and soft is losses.ABCE_SOFTMAX and sig != soft
    assert soft.name == "abce" and soft.per_pixel is sig.per_pixel
    labels = jnp.array([[[0, 1, 0, 3]]])
    mask = jnp.array([[True, True, False, True]])  # LVM unannotated
    value = float(sig(LOGITS, labels, mask))
    assert np.isfinite(value) and value == float(soft(LOGITS, labels, mask))


def test_get_rejects_unknown_and_misapplied_rules():
    for name in ("cce", "acce", "marginal", "abce"):
        assert losses.get(name) is losses.LOSSES[name]
    with pytest.raises(ValueError, match="abce_inference must be one of"):
        losses.get("abce", abce_inference="argmax")
    with pytest.raises(ValueError, match="applies to loss 'abce' only"):
        losses.get("cce", abce_inference="softmax")
    with pytest.raises(ValueError, match="unknown loss"):
        losses.get("bce")


def test_config_field_round_trip_and_default():
    cfg = LossConfig(name="abce", abce_inference="softmax")
    assert cfg.decision_rule == "abce:softmax"
    assert losses.from_config(cfg) is losses.ABCE_SOFTMAX
    assert LossConfig(name="abce").decision_rule == "abce"
    assert LossConfig(name="acce").decision_rule == "acce"
    assert losses.from_config(LossConfig(name="abce")) is losses.ABCE
    with pytest.raises(ValueError, match="loss.abce_inference must be one of"):
        LossConfig(name="abce", abce_inference="sigmoid ")
    with pytest.raises(ValueError, match="applies to loss 'abce' only"):
        LossConfig(name="marginal", abce_inference="softmax")

    full = tiny_config("/nonexistent", loss=cfg)
    assert Config.from_json(full.to_json()) == full
    assert json.loads(full.to_json())["loss"]["abce_inference"] == "softmax"
    # A config.json written before the field existed loads with the sigmoid rule.
    old = json.loads(tiny_config("/nonexistent", loss=LossConfig(name="abce")).to_json())
    del old["loss"]["abce_inference"]
    loaded = Config.from_dict(old)
    assert loaded.loss.abce_inference == "sigmoid"
    assert loaded == tiny_config("/nonexistent", loss=LossConfig(name="abce"))


@pytest.fixture(scope="module")
def abce_run(engine_data_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("abce_rule") / "run")
    config = tiny_config(engine_data_dir, epochs=1, loss=LossConfig(name="abce"))
    train.train_and_evaluate(config, workdir)
    return workdir


def _json(summary):
    return json.dumps(files.json_safe(summary), sort_keys=True)


def _with_rule(model, rule):
    loss = dataclasses.replace(model.config.loss, abce_inference=rule)
    return dataclasses.replace(model, config=dataclasses.replace(model.config, loss=loss))


def _logits(model, images):
    net = nnx.merge(train.graphdef(model.config, training=False), model.params, model.rest)
    return net(train.model_input(train.to_float(jnp.asarray(images)))).astype(jnp.float32)


def _lower_background_bias(params, by=100.0):
    """The head's channel-0 bias lowered by ``by``: the softmax rule then never picks
    background, the sigmoid rule (which ignores channel 0) is unchanged."""
    found = []

    def shift(path, leaf):
        if "'head'" in jax.tree_util.keystr(path) and "'bias'" in jax.tree_util.keystr(path):
            leaf = np.array(leaf)
            leaf[0] -= by
            found.append(path)
        return leaf

    params = jax.tree_util.tree_map_with_path(shift, params)
    assert len(found) == 1, found
    return params


def test_evaluation_uses_the_configured_rule(abce_run, tmp_path):
    restored = inference.restore(abce_run, checkpoint="latest")
    assert restored.decision_rule == "abce"
    # One epoch may leave the rules agreeing on every test pixel; a lowered channel-0
    # bias makes them differ, on known pixels.
    model = dataclasses.replace(restored, params=_lower_background_bias(restored.params))
    mix = train.eval_mixture(model.config, "test")
    batches = list(pipeline.eval_batches(mix, batch_size=model.config.eval_batch_size))
    images = np.concatenate([b["image"][b["valid"]] for b in batches])
    true = np.concatenate([b["segmentation"][b["valid"]] for b in batches]).astype(np.int32)
    logits = _logits(model, images)
    expected = {"sigmoid": np.asarray(losses.abce_predict(logits)),
                "softmax": np.asarray(jnp.argmax(logits, -1), np.int32)}
    assert (expected["softmax"] != 0).all() and (expected["sigmoid"] == 0).any()

    for rule in ("sigmoid", "softmax"):
        m = _with_rule(model, rule)
        np.testing.assert_array_equal(m.predictor()(images), expected[rule])
        summary, rows = evaluate_lib.evaluate_model(m, split="test", checkpoint="latest")
        assert summary["decision_rule"] == {"sigmoid": "abce", "softmax": "abce:softmax"}[rule]
        dice = metrics.dice_per_class(expected[rule], true, num_classes=labels_lib.NUM_CLASSES)
        got = np.array([[r[f"dice_{n}"] for n in ("lv", "lvm", "la")] for r in rows])
        np.testing.assert_allclose(got, dice[:, 1:], rtol=1e-6)

    # A run folder whose config.json names the softmax rule is evaluated with it, and
    # one written before the field existed with the sigmoid rule.
    for rule, edit in (("softmax", lambda c: c["loss"].update(abce_inference="softmax")),
                       ("sigmoid", lambda c: c["loss"].pop("abce_inference"))):
        copy = str(tmp_path / rule)
        shutil.copytree(abce_run, copy, symlinks=True)
        path = os.path.join(copy, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        edit(cfg)
        with open(path, "w") as f:
            json.dump(cfg, f)
        summary = evaluate_lib.evaluate(copy, split="test", checkpoint="latest")
        expected_summary, _ = evaluate_lib.evaluate_model(
            _with_rule(restored, rule), split="test", checkpoint="latest")
        assert _json(summary) == _json(expected_summary)
        with open(os.path.join(copy, "eval", "test", "summary.json")) as f:
            assert json.load(f)["decision_rule"] == {"sigmoid": "abce",
                                                     "softmax": "abce:softmax"}[rule]
