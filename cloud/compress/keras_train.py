"""Methods that train: magnitude pruning, distillation and quantization-aware training.

Each takes a Keras model and training data, leaves the given model untouched, and returns a new
Keras model (ready for TensorFlow's converter) with a one-line recipe.

Pruning and quantization-aware training are written here on Keras 3 rather than taken from
tensorflow-model-optimization: tfmot 0.8 wraps only tf_keras (Keras 2) models, its
`prune_low_magnitude` and `quantize_model` raise ValueError on a Keras 3 model, and a Keras 3
`.keras` file does not load in tf_keras (its InputLayer config differs). The techniques are the
same: tfmot's polynomial-decay magnitude schedule with per-tensor masks, and int8 weight
fake-quantization with a straight-through estimator. There is nothing to strip afterwards: the
masks live in a callback, and the model keeps its own layers.

TensorFlow and Keras are imported inside the functions (see `keras_convert.tensorflow`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloud.compress.data import Dataset
from cloud.compress.errors import MethodUnavailable
from cloud.compress.keras_convert import tensorflow
from cloud.compress.options import CompressOptions

__all__ = ["distill", "prune", "qat"]

_KERNEL_NAMES = ("kernel", "depthwise_kernel", "pointwise_kernel")
_EPS = 1e-7


def _keras(seed: int) -> Any:
    tensorflow()
    import keras

    # Training is seeded so that the same inputs give the same candidate; Keras keeps its seed
    # in process-wide generators, which is the only way it offers.
    keras.utils.set_random_seed(seed)
    return keras


def _copy(keras: Any, model: Any) -> Any:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _kernels(model: Any) -> list[Any]:
    return [v for v in model.trainable_weights if v.name in _KERNEL_NAMES and len(v.shape) >= 2]


def _is_probabilities(model: Any, x: np.ndarray) -> bool:
    """Whether the model ends in a softmax (rows of non-negative numbers summing to 1)."""
    out = np.asarray(model.predict(x[:64], verbose=0))
    if out.ndim != 2:
        raise MethodUnavailable(
            f"training methods need a classifier with [N, classes] output, got {list(out.shape)}"
        )
    return bool(out.min() >= 0.0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


def _labelled(train: Dataset | None, method: str) -> tuple[np.ndarray, np.ndarray]:
    if train is None or train.y is None:
        raise MethodUnavailable(f"{method}: needs labelled training data (--data with y)")
    return train.x, train.y


def _fine_tune(
    keras: Any,
    model: Any,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    lr: float,
    batch_size: int,
    callbacks: list[Any],
) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=not _is_probabilities(model, x)
        ),
    )
    model.fit(
        x, y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0, callbacks=callbacks
    )


def prune(model: Any, train: Dataset | None, options: CompressOptions) -> tuple[Any, str]:
    """Magnitude pruning of every kernel to `options.prune_sparsity`, with fine-tuning."""
    x, y = _labelled(train, "prune")
    keras = _keras(options.seed)
    pruned = _copy(keras, model)
    kernels = _kernels(pruned)
    if not kernels:
        raise MethodUnavailable("prune: the model has no Dense or convolution kernels")
    steps_per_epoch = -(-len(x) // options.batch_size)
    total = steps_per_epoch * options.prune_epochs
    end_step = max(1, int(0.6 * total))  # reach the target, then recover for the rest
    frequency = max(1, steps_per_epoch // 2)
    schedule = _MagnitudeSchedule(kernels, options.prune_sparsity, end_step, frequency)
    _fine_tune(
        keras,
        pruned,
        x,
        y,
        options.prune_epochs,
        options.prune_learning_rate,
        options.batch_size,
        [schedule.callback(keras)],
    )
    schedule.apply(options.prune_sparsity)  # exact target, whatever the step count was
    total_weights = sum(int(np.prod(k.shape)) for k in kernels)
    zeros = sum(int(np.count_nonzero(k.numpy() == 0)) for k in kernels)
    recipe = (
        f"prune: magnitude pruning of {len(kernels)} kernels to "
        f"{options.prune_sparsity:.0%} sparsity ({zeros}/{total_weights} weights zero), "
        f"polynomial schedule (power 3) over steps 0..{end_step} every {frequency}, "
        f"fine-tuned {options.prune_epochs} epochs with Adam lr {options.prune_learning_rate:g}; "
        "float32 TFLite (the zeros pay off under zstd)"
    )
    return pruned, recipe


class _MagnitudeSchedule:
    """Per-kernel masks zeroing the smallest weights, on tfmot's PolynomialDecay schedule."""

    def __init__(self, kernels: list[Any], target: float, end_step: int, frequency: int) -> None:
        self.kernels = kernels
        self.target = target
        self.end_step = end_step
        self.frequency = frequency
        self.masks = [np.ones(k.shape, dtype=np.float32) for k in kernels]
        self.step = 0

    def sparsity_at(self, step: int) -> float:
        progress = min(1.0, step / self.end_step)
        return self.target * (1.0 - (1.0 - progress) ** 3)

    def update_masks(self, sparsity: float) -> None:
        for i, kernel in enumerate(self.kernels):
            magnitude = np.abs(kernel.numpy()).ravel()
            k = round(sparsity * magnitude.size)
            mask = np.ones(magnitude.size, dtype=np.float32)
            if k > 0:
                mask[np.argpartition(magnitude, k - 1)[:k]] = 0.0
            self.masks[i] = mask.reshape(kernel.shape)

    def apply(self, sparsity: float | None = None) -> None:
        if sparsity is not None:
            self.update_masks(sparsity)
        for kernel, mask in zip(self.kernels, self.masks, strict=True):
            kernel.assign(kernel.numpy() * mask)

    def callback(self, keras: Any) -> Any:
        schedule = self

        class MagnitudePruning(keras.callbacks.Callback):  # type: ignore[misc]
            def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
                schedule.step += 1
                if schedule.step <= schedule.end_step and (
                    schedule.step % schedule.frequency == 0 or schedule.step == schedule.end_step
                ):
                    schedule.update_masks(schedule.sparsity_at(schedule.step))
                schedule.apply()

        return MagnitudePruning()


def _fake_quant_int8(weights: np.ndarray, depthwise: bool) -> np.ndarray:
    """Symmetric per-output-channel int8 round trip, the grid the TFLite converter uses."""
    w = weights.reshape((*weights.shape[:-2], -1)) if depthwise else weights
    axes = tuple(range(w.ndim - 1))
    scale = np.maximum(np.abs(w).max(axis=axes, keepdims=True), 1e-12) / 127.0
    q = np.clip(np.round(w / scale), -127, 127) * scale
    rounded: np.ndarray = q.reshape(weights.shape).astype(weights.dtype)
    return rounded


def qat(model: Any, train: Dataset | None, options: CompressOptions) -> tuple[Any, str]:
    """Fine-tune with int8 fake-quantized weights (straight-through estimator)."""
    x, y = _labelled(train, "qat")
    keras = _keras(options.seed)
    tuned = _copy(keras, model)
    kernels = _kernels(tuned)
    if not kernels:
        raise MethodUnavailable("qat: the model has no Dense or convolution kernels")
    depthwise = [k.name == "depthwise_kernel" for k in kernels]

    class FakeQuantWeights(keras.callbacks.Callback):  # type: ignore[name-defined,misc]
        """Forward and backward passes see int8-rounded weights; updates go to float masters."""

        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self.master = [k.numpy() for k in kernels]
            self.rounded = [
                _fake_quant_int8(m, d) for m, d in zip(self.master, depthwise, strict=True)
            ]
            for kernel, rounded in zip(kernels, self.rounded, strict=True):
                kernel.assign(rounded)

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            for kernel, master, rounded in zip(kernels, self.master, self.rounded, strict=True):
                kernel.assign(master + (kernel.numpy() - rounded))

    _fine_tune(
        keras,
        tuned,
        x,
        y,
        options.qat_epochs,
        options.qat_learning_rate,
        options.batch_size,
        [FakeQuantWeights()],
    )
    recipe = (
        f"qat: {options.qat_epochs} epochs of fine-tuning with int8 fake-quantized weights "
        f"(per-channel symmetric, straight-through estimator) on {len(kernels)} kernels, "
        f"Adam lr {options.qat_learning_rate:g}"
    )
    return tuned, recipe


def _student(keras: Any, teacher: Any, width: float) -> Any:
    """The teacher's architecture with every conv/Dense width scaled, the output layer kept."""
    sized = [layer for layer in teacher.layers if {"filters", "units"} & set(layer.get_config())]
    if not sized:
        raise MethodUnavailable("distill: the model has no Dense or convolution layers to narrow")
    head = sized[-1].name

    def narrow(layer: Any) -> Any:
        config = layer.get_config()
        if layer.name != head:
            for key in ("filters", "units"):
                if key in config:
                    config[key] = max(1, round(config[key] * width))
        return layer.__class__.from_config(config)

    try:
        return keras.models.clone_model(teacher, clone_function=narrow)
    except (ValueError, TypeError) as e:
        raise MethodUnavailable(f"distill: cannot narrow this architecture: {e}") from e


def distill(teacher: Any, train: Dataset | None, options: CompressOptions) -> tuple[Any, str]:
    """Train a narrower copy of the teacher on its softened outputs (and the labels, if any)."""
    if train is None:
        raise MethodUnavailable("distill: needs training data (--data)")
    keras = _keras(options.seed)
    from keras import ops

    x = train.x
    probabilities = _is_probabilities(teacher, x)
    t = options.distill_temperature
    teacher_out = np.asarray(teacher.predict(x, batch_size=256, verbose=0), dtype=np.float64)
    logits = np.log(teacher_out + _EPS) if probabilities else teacher_out
    soft = np.exp((logits - logits.max(axis=1, keepdims=True)) / t)
    soft /= soft.sum(axis=1, keepdims=True)
    classes = soft.shape[1]
    alpha = options.distill_alpha if train.y is not None else 0.0
    hard = (
        np.eye(classes, dtype=np.float32)[train.y]
        if train.y is not None
        else np.zeros_like(soft, dtype=np.float32)
    )
    targets = np.concatenate([hard, soft.astype(np.float32)], axis=1)

    def loss(y_true: Any, y_pred: Any) -> Any:
        # softmax(log p / T) == softmax(logits / T): a softmax head needs no surgery.
        student_logits = ops.log(y_pred + _EPS) if probabilities else y_pred
        hard_loss = -ops.sum(y_true[:, :classes] * ops.log_softmax(student_logits), axis=1)
        soft_t = y_true[:, classes:]
        soft_loss = ops.sum(
            soft_t * (ops.log(soft_t + _EPS) - ops.log_softmax(student_logits / t)), axis=1
        )
        return alpha * hard_loss + (1.0 - alpha) * (t * t) * soft_loss

    student = _student(keras, teacher, options.distill_width)
    student.compile(optimizer=keras.optimizers.Adam(options.distill_learning_rate), loss=loss)
    student.fit(
        x,
        targets,
        epochs=options.distill_epochs,
        batch_size=options.batch_size,
        shuffle=True,
        verbose=0,
    )
    recipe = (
        f"distill: student at width {options.distill_width:g} "
        f"({student.count_params()} parameters, teacher {teacher.count_params()}), "
        f"soft targets at temperature {t:g}, alpha {alpha:g} on hard labels, "
        f"{options.distill_epochs} epochs with Adam lr {options.distill_learning_rate:g}; "
        "float32 TFLite"
    )
    return student, recipe
