"""The FID Inception-v3 with random weights on small inputs: shapes, the loader, and PyTorch.

No real weights are needed. The network is checked by its parameter count, by loading a state
dict written in pytorch-fid's names and layouts, and (where PyTorch is installed) against a
functional PyTorch rendering of pytorch-fid's forward pass on a 75x75 input.
"""

import numpy as np
import pytest

from gans.metrics import inception

# torchvision's inception_v3 has 27,161,264 parameters; without its auxiliary head (3,326,696)
# and with 1,008 instead of 1,000 classes (8 * 2,049 more), pytorch-fid's network has this many.
FID_INCEPTION_PARAMETERS = 27_161_264 - 3_326_696 + 8 * 2_049
# Small inputs keep the tests fast; 79 (not the minimum 75) leaves odd sides after every stride,
# where an off-by-one in padding would show. One size, so the network compiles once.
SIDE = 139


def flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flatten(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def torch_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights under pytorch-fid's names, in PyTorch's layouts (He-scaled kernels)."""
    rng = np.random.default_rng(seed)
    state = {}
    shapes = inception.expected_shapes()
    for (collection, *path, leaf), shape in flatten(shapes):
        shape = shape.shape
        if leaf == "kernel" and len(shape) == 4:  # Flax [h, w, in, out] -> PyTorch [out, in, h, w].
            value = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:3]))
            state[".".join(path[:-1]) + ".conv.weight"] = value.transpose(3, 2, 0, 1)
        elif leaf == "kernel":
            value = rng.standard_normal(shape) / np.sqrt(shape[0])
            state["fc.weight"] = value.T
        else:
            torch_leaf = {
                "scale": "weight",
                "bias": "bias",
                "mean": "running_mean",
                "var": "running_var",
            }[leaf]
            value = {
                "scale": rng.uniform(0.5, 1.5, shape),
                "bias": rng.normal(0.0, 0.1, shape),
                "mean": rng.normal(0.0, 0.1, shape),
                "var": rng.uniform(0.5, 1.5, shape),
            }[leaf]
            if path == ["fc"]:
                torch_leaf = "bias"
            state[".".join(path) + "." + torch_leaf] = value
    return {name: value.astype(np.float32) for name, value in state.items()}


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "random_inception.npz"
    state = torch_state_dict()
    state["Conv2d_1a_3x3.bn.num_batches_tracked"] = np.array(0)  # As in real state dicts.
    np.savez(path, **state)
    return path


def test_parameter_count_is_pytorch_fids():
    shapes = inception.expected_shapes()
    count = sum(int(np.prod(s.shape)) for _, s in flatten(shapes["params"]))
    assert count == FID_INCEPTION_PARAMETERS


def test_features_and_logits_have_the_fid_shapes(weights_file):
    extractor = inception.InceptionExtractor.from_file(weights_file, image_size=None, batch_size=2)
    images = np.random.default_rng(1).uniform(-1, 1, (3, SIDE, SIDE, 3)).astype(np.float32)
    features, logits = extractor.outputs(images)  # Three images: a full batch, a padded one.
    assert features.shape == (3, 2048) and logits.shape == (3, 1008)
    assert np.isfinite(features).all() and (features >= 0).all()  # pool3 follows a ReLU.
    np.testing.assert_allclose(extractor.features(images[2:]), features[2:], rtol=1e-5, atol=1e-5)


def test_loader_names_what_does_not_fit(weights_file, tmp_path):
    state = dict(np.load(weights_file))
    del state["Mixed_6b.branch7x7_2.conv.weight"]
    state["AuxLogits.fc.weight"] = np.zeros((1008, 768), np.float32)
    state["fc.bias"] = np.zeros(1000, np.float32)
    with pytest.raises(ValueError) as error:
        inception.variables_from_state_dict(state)
    message = str(error.value)
    assert "1 missing: params/Mixed_6b/branch7x7_2/conv/kernel" in message
    assert "AuxLogits/fc/kernel" in message and "params/fc/bias (1000,)" in message
    with pytest.raises(FileNotFoundError, match="pytorch-fid"):
        inception.load_inception_variables(tmp_path / "absent.npz")


def test_preprocess_makes_rgb_299_and_refuses_small_inputs():
    grey = np.zeros((2, 32, 32, 1), np.float32)
    assert inception.preprocess(grey).shape == (2, 299, 299, 3)
    with pytest.raises(ValueError, match="at least 75x75"):
        inception.preprocess(grey, size=None)


# --- Against PyTorch: pytorch-fid's forward pass, written with torch.nn.functional. ---


def torch_forward(state, images):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    sd = {name: torch.from_numpy(value) for name, value in state.items()}

    def conv(x, name, stride=1, padding=0):
        x = functional.conv2d(x, sd[f"{name}.conv.weight"], stride=stride, padding=padding)
        bn = [sd[f"{name}.bn.{leaf}"] for leaf in ("running_mean", "running_var", "weight", "bias")]
        return functional.relu(functional.batch_norm(x, *bn, training=False, eps=1e-3))

    def avg_pool(x):
        return functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    def block_a(x, n):
        b1 = conv(x, f"{n}.branch1x1")
        b5 = conv(conv(x, f"{n}.branch5x5_1"), f"{n}.branch5x5_2", padding=2)
        b3 = conv(conv(x, f"{n}.branch3x3dbl_1"), f"{n}.branch3x3dbl_2", padding=1)
        b3 = conv(b3, f"{n}.branch3x3dbl_3", padding=1)
        return torch.cat([b1, b5, b3, conv(avg_pool(x), f"{n}.branch_pool")], 1)

    def block_b(x, n):
        b3 = conv(x, f"{n}.branch3x3", stride=2)
        bd = conv(conv(x, f"{n}.branch3x3dbl_1"), f"{n}.branch3x3dbl_2", padding=1)
        bd = conv(bd, f"{n}.branch3x3dbl_3", stride=2)
        return torch.cat([b3, bd, functional.max_pool2d(x, 3, stride=2)], 1)

    def block_c(x, n):
        b1 = conv(x, f"{n}.branch1x1")
        b7 = conv(x, f"{n}.branch7x7_1")
        b7 = conv(b7, f"{n}.branch7x7_2", padding=(0, 3))
        b7 = conv(b7, f"{n}.branch7x7_3", padding=(3, 0))
        bd = conv(x, f"{n}.branch7x7dbl_1")
        for i, padding in zip(range(2, 6), [(3, 0), (0, 3), (3, 0), (0, 3)]):
            bd = conv(bd, f"{n}.branch7x7dbl_{i}", padding=padding)
        return torch.cat([b1, b7, bd, conv(avg_pool(x), f"{n}.branch_pool")], 1)

    def block_d(x, n):
        b3 = conv(conv(x, f"{n}.branch3x3_1"), f"{n}.branch3x3_2", stride=2)
        b7 = conv(x, f"{n}.branch7x7x3_1")
        b7 = conv(b7, f"{n}.branch7x7x3_2", padding=(0, 3))
        b7 = conv(b7, f"{n}.branch7x7x3_3", padding=(3, 0))
        b7 = conv(b7, f"{n}.branch7x7x3_4", stride=2)
        return torch.cat([b3, b7, functional.max_pool2d(x, 3, stride=2)], 1)

    def block_e(x, n, pool):
        b1 = conv(x, f"{n}.branch1x1")
        b3 = conv(x, f"{n}.branch3x3_1")
        b3 = torch.cat(
            [
                conv(b3, f"{n}.branch3x3_2a", padding=(0, 1)),
                conv(b3, f"{n}.branch3x3_2b", padding=(1, 0)),
            ],
            1,
        )
        bd = conv(conv(x, f"{n}.branch3x3dbl_1"), f"{n}.branch3x3dbl_2", padding=1)
        bd = torch.cat(
            [
                conv(bd, f"{n}.branch3x3dbl_3a", padding=(0, 1)),
                conv(bd, f"{n}.branch3x3dbl_3b", padding=(1, 0)),
            ],
            1,
        )
        pooled = avg_pool(x) if pool == "avg" else functional.max_pool2d(x, 3, stride=1, padding=1)
        return torch.cat([b1, b3, bd, conv(pooled, f"{n}.branch_pool")], 1)

    def forward(x):
        x = conv(x, "Conv2d_1a_3x3", stride=2)
        x = conv(x, "Conv2d_2a_3x3")
        x = functional.max_pool2d(conv(x, "Conv2d_2b_3x3", padding=1), 3, stride=2)
        x = conv(x, "Conv2d_3b_1x1")
        x = functional.max_pool2d(conv(x, "Conv2d_4a_3x3"), 3, stride=2)
        for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
            x = block_a(x, name)
        x = block_b(x, "Mixed_6a")
        for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            x = block_c(x, name)
        x = block_d(x, "Mixed_7a")
        x = block_e(block_e(x, "Mixed_7b", "avg"), "Mixed_7c", "max")
        pool3 = functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return pool3.numpy(), functional.linear(pool3, sd["fc.weight"], sd["fc.bias"]).numpy()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Its pool contends with XLA's: 30 times slower with two threads.
    try:
        with torch.no_grad():
            return forward(torch.from_numpy(images).permute(0, 3, 1, 2))
    finally:
        torch.set_num_threads(threads)


def test_matches_pytorch_fids_forward_pass(weights_file):
    pytest.importorskip("torch")
    state = dict(np.load(weights_file))
    images = np.random.default_rng(2).uniform(-1, 1, (2, SIDE, SIDE, 3)).astype(np.float32)
    expected_features, expected_logits = torch_forward(state, images)
    extractor = inception.InceptionExtractor.from_file(weights_file, image_size=None, batch_size=2)
    features, logits = extractor.outputs(images)
    scale = np.abs(expected_features).max()
    np.testing.assert_allclose(features, expected_features, atol=1e-4 * scale, rtol=1e-3)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4 * np.abs(expected_logits).max())


def test_resize_matches_pytorch_bilinear_interpolation():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    for side in (32, 400):  # Up-sampling (CIFAR-10) and down-sampling, without antialiasing.
        images = rng.uniform(-1, 1, (1, side, side, 3)).astype(np.float32)
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(images).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear"
        )
        np.testing.assert_allclose(
            inception.preprocess(images), expected.permute(0, 2, 3, 1).numpy(), atol=1e-5
        )
