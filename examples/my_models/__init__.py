"""An example package of user models for archbench.

Any function that takes no arguments and returns an ``nn.Module`` mapping a
float (N, 1, 28, 28) batch to (N, 10) logits can be benchmarked:

    cd examples && archbench run --models my_models:lenet5,cnn
    archbench profile my_models:lenet5
"""

from torch import nn


def lenet5() -> nn.Module:
    """LeCun et al.'s LeNet-5 layout for 28x28 inputs (padding 2 on the first conv)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.Tanh(),
        nn.Linear(120, 84), nn.Tanh(),
        nn.Linear(84, 10),
    )
