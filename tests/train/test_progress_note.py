"""The trainer's progress hook: a model's ``progress_note()`` rides on every logged progress line."""

import numpy as np
import pytest

from npformer.models import GPT, GPTConfig
from npformer.train.trainer import TrainConfig, Trainer

DATA = (np.arange(2000) * 5) % 13


class NotedGPT(GPT):
    """A GPT that reports how many times it was asked (a stand-in for expert utilisation)."""

    def __init__(self, config, note):
        super().__init__(config)
        self.note, self.asked = note, 0

    def progress_note(self):
        self.asked += 1
        return self.note if not callable(self.note) else self.note(self.asked)


def _run(model, max_iters=4):
    cfg = TrainConfig(max_iters=max_iters, batch_size=2, warmup_iters=0, eval_interval=100, eval_iters=1,
                      log_interval=2, seed=1)
    Trainer(model, cfg, DATA[:1800], DATA[1800:]).run()


def _config():
    return GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.0, seed=3)


def test_progress_note_is_appended_to_each_logged_line(capsys):
    model = NotedGPT(_config(), lambda k: f"experts used {k}/4")
    _run(model)
    lines = [line for line in capsys.readouterr().out.splitlines() if "tok/s" in line]
    assert len(lines) == 2 and model.asked == 2  # steps 2 and 4 are logged, and only they ask
    assert lines[0].endswith(" | experts used 1/4") and lines[1].endswith(" | experts used 2/4")


def test_empty_note_and_no_hook_leave_the_line_alone(capsys):
    _run(NotedGPT(_config(), ""))
    noted = [line for line in capsys.readouterr().out.splitlines() if "tok/s" in line]
    _run(GPT(_config()))
    plain = [line for line in capsys.readouterr().out.splitlines() if "tok/s" in line]
    assert len(noted) == len(plain) == 2
    assert all(line.split("| left ")[1].count("|") == 0 for line in noted + plain)


def test_a_note_that_is_not_a_str_is_named():
    with pytest.raises(TypeError, match="progress_note"):
        _run(NotedGPT(_config(), 3))
