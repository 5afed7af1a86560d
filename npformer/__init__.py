"""npformer: Transformers whose every gradient is written by hand, on NumPy (CPU) or CuPy (GPU).

    import npformer
    npformer.set_backend("numpy")          # or "cupy", or NPFORMER_BACKEND=cupy
    npformer.set_kernels("reference")      # or "fast" (the default), or NPFORMER_KERNELS=reference
    from npformer import functional as F   # the reference pairs: F.layernorm_forward, F.layernorm_backward, ...

The package, from the bottom up (a layer imports only those below it):
    backend         the array layer: NumPy or CuPy, host <-> device boundaries, dtypes, random generators
    io/             safetensors, read and written with NumPy alone
    functional/     the reference tier: every op a forward/backward pair written as its maths
    kernels/        the fast tier (same signatures, tested equal) and the switch between tiers (``kernels.ops``)
    nn/             layers: parameters plus the pairs, each with an explicit backward
    models/         GPT (GPT.from_pretrained reads Hugging Face gpt2 / llama directories), Encoder, EncoderDecoder
    decode/         sampling with a key/value cache, greedy and beam search
    parallel/       data parallelism over the cores of one machine (threads or processes)
    inspect/        attention maps and activations from a forward, per-head summaries, the pictures
    data/           tokenizers (GPT-2's byte-level BPE too: npformer.BPETokenizer), batches, corpora, toy tasks
    train/          optimizers, schedules, checkpoints, the training loop
    size/           the model-size calculator (python -m npformer.size)
    gradcheck       finite-difference gradient checks for any pair, layer or model

Importing npformer imports NumPy and nothing else optional; CuPy is imported only when asked for.
"""

from . import backend, functional, gradcheck, kernels, models, nn
from .backend import BackendError, get_backend, set_backend, to_numpy, xp
from .data.bpe import BPETokenizer
from .kernels import get_kernels, set_kernels, use_kernels
from .models import GPT, Encoder, EncoderConfig, EncoderDecoder, EncoderDecoderConfig, GPTConfig

__version__ = "0.1.0"

__all__ = ["BPETokenizer", "BackendError", "Encoder", "EncoderConfig", "EncoderDecoder", "EncoderDecoderConfig", "GPT",
           "GPTConfig", "backend", "functional", "get_backend", "get_kernels", "gradcheck", "kernels", "models", "nn",
           "set_backend", "set_kernels", "to_numpy", "use_kernels", "xp", "__version__"]
