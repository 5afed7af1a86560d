"""The test suite's own machinery: randomize_parameters really gives every parameter values of its own, and the
suite keeps its layout rules (no test file imports another; every test folder is a package)."""

import ast
import pathlib

import numpy as np

from npformer import backend
from npformer.models import GPT, GPTConfig

from .helpers import randomize_parameters
from .strategies import normal_array


def test_randomize_parameters_draws_every_parameter_on_its_own():
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=2, n_head=2, n_embd=8, tie_embeddings=True))
    with backend.float64():
        model.astype(np.float64)
        randomize_parameters(model, 3)
    values = {name: backend.to_numpy(p.data) for name, p in model.named_parameters()}
    assert all(a.dtype == np.float64 for a in values.values())
    assert not np.array_equal(values["blocks.0.norm1.weight"], values["blocks.0.norm1.bias"])
    assert not np.array_equal(values["blocks.0.norm1.weight"], values["blocks.1.norm1.weight"])
    assert not np.any(values["blocks.0.norm1.weight"] == 1.0) and not np.any(values["blocks.0.attn.qkv.bias"] == 0.0)
    flat = np.concatenate([a.reshape(-1) for a in values.values()])
    assert len(np.unique(flat)) == flat.size  # no value repeats, within a parameter or across them
    # its stream is not default_rng(seed), which tests use for inputs (normal_array)
    first = next(iter(values.values())).reshape(-1)
    assert not np.allclose(first / 0.5, normal_array(3, first.shape))
    # the same seed gives the same values; another seed others
    again = randomize_parameters(GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=2, n_head=2, n_embd=8)), 3)
    other = randomize_parameters(GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=2, n_head=2, n_embd=8)), 4)
    a, b = (backend.to_numpy(m.blocks[1].ffn.fc.weight.data) for m in (again, other))
    np.testing.assert_allclose(a, values["blocks.1.ffn.fc.weight"], rtol=1e-6)  # float32 copy of the same draw
    assert not np.allclose(a, b)


TESTS = pathlib.Path(__file__).parent


def test_no_test_file_imports_another():
    """What tests share lives in strategies.py or helpers.py, never in a test file."""
    problems = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            if any(part.startswith("test_") for name in names for part in name.split(".")):
                problems.append(f"{path.relative_to(TESTS)}:{node.lineno}")
    assert not problems, "test files importing test files: " + ", ".join(problems)


def test_every_test_folder_is_a_package():
    """Basenames repeat across folders (test_attention.py...): pytest's default import mode needs packages."""
    folders = {path.parent for path in TESTS.rglob("test_*.py")}
    assert not [str(f) for f in folders if not (f / "__init__.py").exists()]
