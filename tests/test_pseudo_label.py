"""Pseudo-labelling baseline: filling missing classes and the derived teacher/student
datasets."""

import logging

import numpy as np
import pytest

from echojax import labels, phantoms, pseudo_label
from echojax.config import Config, LossConfig, ModelConfig
from echojax.data.mixture import Mixture, Removal, Source


def test_fill_missing_only_background_pixels():
    seg = np.array([[0, 1], [3, 0]], np.uint8)
    lm = np.array([True, True, False, True])
    pred = np.array([[2, 2], [2, 1]])
    out, out_lm = pseudo_label.fill_missing(seg, lm, pred, [labels.LVM, labels.LA])
    # LVM missing: background pixels predicted LVM become LVM; LA annotated: untouched.
    assert out.tolist() == [[2, 1], [3, 0]]
    assert out_lm.tolist() == [True, True, True, True]
    assert seg.tolist() == [[0, 1], [3, 0]]  # input not modified
    with pytest.raises(ValueError, match="background"):
        pseudo_label.fill_missing(seg, lm, pred, [0])


def _phantom_examples(n_subjects, split):
    from tfds_builders.synthetic_echo.synthetic_echo_dataset_builder import split_of
    for i in range(n_subjects):
        if split_of(i) == split:
            yield from phantoms.generate_subject("camus_like", i, resolution=32)


def test_teacher_and_student_datasets(tmp_path, caplog, capsys):
    data_dir = str(tmp_path / "tfds")
    with caplog.at_level(logging.INFO):
        name = pseudo_label.write_derived(
            "base_tiny",
            {s: (lambda s=s: _phantom_examples(20, s)) for s in ("train", "validation", "test")},
            resolution=32, data_dir=data_dir, description="test data")
    # Prepared silently: no TFDS warning (custom config, missing dataset_info.json) or line.
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert capsys.readouterr().out == ""
    base_src = Source(name, alias="camus", removals=(Removal(("lvm",), 0.5),))
    base = Config(sources=(base_src,), resolution=32, data_dir=data_dir, seed=0,
                  loss=LossConfig(name="acce"), model=ModelConfig(name="unet", size="tiny"))
    train = Mixture([base_src], "train", data_dir=data_dir, seed=0)
    n_train = len(train)  # 16 subjects x 4 images
    with_lvm = sum(bool(train[i]["label_mask"][labels.LVM]) for i in range(n_train))
    assert with_lvm == n_train // 2

    teacher = pseudo_label.teacher_config(base, ["lvm"])
    assert teacher.loss.name == "cce" and teacher.sources[0].alias == "camus"
    t_train = Mixture(teacher.sources, "train", data_dir=data_dir, seed=5)
    assert len(t_train) == with_lvm
    assert all(t_train[i]["label_mask"][labels.LVM] for i in range(len(t_train)))
    t_test = Mixture(teacher.sources, "test", data_dir=data_dir, seed=0, metadata=True)
    b_test = Mixture([base_src], "test", data_dir=data_dir, seed=0, metadata=True)
    assert len(t_test) == len(b_test) > 0
    assert np.array_equal(t_test[0]["segmentation"], b_test[0]["segmentation"])

    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    teacher.save(teacher_dir / "config.json")
    calls = []

    def everything_lvm(images):
        calls.append(len(images))
        return np.full(images.shape[:3], labels.LVM, np.int32)

    student = pseudo_label.student_config(base, ["lvm"], str(teacher_dir), predict=everything_lvm)
    s_train = Mixture(student.sources, "train", data_dir=data_dir, seed=0)
    val = Mixture([base_src], "validation", data_dir=data_dir, seed=0)
    val_missing = sum(not val[i]["label_mask"][labels.LVM] for i in range(len(val)))
    predicted = (n_train - with_lvm) + val_missing  # train and validation are filled
    assert len(s_train) == n_train and sum(calls) == predicted and val_missing > 0
    for i in range(n_train):
        before, after = train[i], s_train[i]
        assert after["label_mask"].all()
        if before["label_mask"][labels.LVM]:
            assert np.array_equal(before["segmentation"], after["segmentation"])
        else:  # background became LVM; annotated pixels kept
            fg = before["segmentation"] != 0
            assert np.array_equal(after["segmentation"][fg], before["segmentation"][fg])
            assert (after["segmentation"][~fg] == labels.LVM).all()
    # Prepared once: asking again reuses the dataset without predicting.
    again = pseudo_label.student_config(base, ["lvm"], str(teacher_dir), predict=everything_lvm)
    assert again == student and sum(calls) == predicted
