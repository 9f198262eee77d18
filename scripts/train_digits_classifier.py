"""Trains the digits classifier shipped as flowjax/assets/digits_classifier.npz.

    python -m scripts.train_digits_classifier [--out PATH] [--epochs 60] [--seed 0]

(from the repository root; or `python scripts/train_digits_classifier.py` with flowjax
installed.)

Deterministic on CPU (fixed seeds, fixed data order). Data: scikit-learn's 8 x 8 digits,
scaled [0, 16] -> [-1, 1], stratified 75/25 train/test split (`load_digits_split`). Training
adds small Gaussian pixel noise (std 0.1) so that the classifier, used for digits FD and
guidance, is smooth around the data. Prints train/test accuracy; expected test accuracy ~98%.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flowjax.metrics._digits import (
    DEFAULT_DIGITS_WEIGHTS,
    DigitsClassifier,
    load_digits_split,
    save_digits_classifier,
)


def accuracy(model: DigitsClassifier, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.asarray(jnp.argmax(model(x), axis=-1)) == y))


def train(
    *, epochs: int, seed: int, batch_size: int = 64, lr: float = 3e-3, noise_std: float = 0.1
) -> tuple[DigitsClassifier, dict[str, np.ndarray]]:
    data = load_digits_split()
    x_train, y_train = data["x_train"], data["y_train"]
    model = DigitsClassifier(rngs=nnx.Rngs(seed))
    steps_per_epoch = len(x_train) // batch_size
    schedule = optax.cosine_decay_schedule(lr, epochs * steps_per_epoch)
    optimizer = nnx.Optimizer(model, optax.adamw(schedule, weight_decay=1e-4), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y, key):
        x = x + noise_std * jax.random.normal(key, x.shape)

        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    for epoch in range(epochs):
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(steps_per_epoch):
            idx = order[i * batch_size : (i + 1) * batch_size]
            key, sub = jax.random.split(key)
            losses.append(float(step(model, optimizer, x_train[idx], y_train[idx], sub)))
        if (epoch + 1) % 10 == 0 or epoch == epochs - 1:
            print(
                f"epoch {epoch + 1:3d}  loss {np.mean(losses):.4f}  "
                f"test acc {accuracy(model, data['x_test'], data['y_test']):.4f}"
            )
    return model, data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_DIGITS_WEIGHTS)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model, data = train(epochs=args.epochs, seed=args.seed)
    train_acc = accuracy(model, data["x_train"], data["y_train"])
    test_acc = accuracy(model, data["x_test"], data["y_test"])
    print(
        f"train accuracy {train_acc:.4f}  test accuracy {test_acc:.4f} "
        f"({len(data['y_test'])} test images)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_digits_classifier(model, args.out, test_accuracy=test_acc)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
