"""Dataset plugins (MNIST, Fashion-MNIST, CIFAR-10), registered by name.

Each plugin describes one dataset: its files in the project's `.npz` layout and in
torchvision's layout, their checksums, the number of classes and the default
training augmentation. Loading and fetching live in `bench.data.read`.
"""
