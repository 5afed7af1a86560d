"""Gradient flow: per layer, the gradient's norm and the size of the optimizer's update relative to the weights,
measured at the steps a trainer logs (npformer.train.trainer records them into ``gradient_flow.csv``).

For the parameters of one layer (``layer_of`` groups them: "blocks.3" holds every parameter of block 3):

    grad_norm     = sqrt(sum of g^2)                     before clipping, as backward left it
    update_ratio  = sqrt(sum of (w_after - w_before)^2) / sqrt(sum of w_after^2)
                                                         the optimizer step's relative size (about 1e-3 is the
                                                         folklore healthy value for Adam; far below, the layer
                                                         barely learns; far above, it is thrashed)

Cheap by construction: nothing happens at the other steps; at a recorded step the sums stay on the device, as
one vector, for the caller to bring home in the transfer it makes anyway; the update needs one copy of the
parameters, made at that step only.
"""

from __future__ import annotations

import math

from .. import backend


def layer_of(name: str) -> str:
    """A parameter's layer: its name up to the first index ("blocks.3.attn.qkv.weight" -> "blocks.3",
    "encoder.blocks.0.ffn.fc.bias" -> "encoder.blocks.0"), else up to its last part ("wte.weight" -> "wte",
    "norm_f.bias" -> "norm_f"; "lm_head" stays "lm_head")."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) if len(parts) > 1 else name


class GradientFlowProbe:
    """Measures one step's gradient flow, in three calls around the optimizer step:

        probe.before_step()          after backward, before clipping: gradients' squared sums; parameters copied
        optimizer.step()
        values = probe.after_step()  one device vector: [grad^2 per layer, update^2 per layer, w^2 per layer]
        rows = probe.rows(step, backend.to_numpy(values))      # in the transfer the caller makes anyway
    """

    def __init__(self, named_parameters):
        self.layers: list[str] = []
        self._groups: list[list] = []
        for name, p in named_parameters:
            layer = layer_of(name)
            if layer not in self.layers:
                self.layers.append(layer)
                self._groups.append([])
            self._groups[self.layers.index(layer)].append(p)
        self._grad_sq = None
        self._before = None

    @staticmethod
    def _squares(arrays):
        """sum of a^2 over arrays, a 0-d array where they live (one dot per array, no temporaries)."""
        total = None
        for a in arrays:
            flat = a.reshape(-1)
            sq = backend.array_module(flat).dot(flat, flat)
            total = sq if total is None else total + sq
        return total

    def before_step(self) -> None:
        self._grad_sq = [self._squares(p.grad for p in group) for group in self._groups]
        self._before = [[p.data.copy() for p in group] for group in self._groups]

    def after_step(self):
        """(3 * layers,) on the parameters' backend; no transfer."""
        if self._before is None:
            raise RuntimeError("GradientFlowProbe.after_step: call before_step() first")
        updates = [self._squares(p.data - old for p, old in zip(group, olds))
                   for group, olds in zip(self._groups, self._before)]
        weights = [self._squares(p.data for p in group) for group in self._groups]
        values = self._grad_sq + updates + weights
        xp = backend.array_module(values[0])
        self._grad_sq = self._before = None
        return xp.stack([v.astype(values[0].dtype) for v in values])

    def rows(self, step: int, host_values) -> list[dict]:
        """One row per layer: step, layer, grad_norm, update_ratio, param_norm (Python floats)."""
        n = len(self.layers)
        g, u, w = host_values[:n], host_values[n:2 * n], host_values[2 * n:3 * n]
        return [dict(step=step, layer=layer, grad_norm=math.sqrt(float(g[i])),
                     update_ratio=math.sqrt(float(u[i])) / math.sqrt(float(w[i])) if float(w[i]) > 0 else math.nan,
                     param_norm=math.sqrt(float(w[i])))
                for i, layer in enumerate(self.layers)]


FIELDS = ("step", "layer", "grad_norm", "update_ratio", "param_norm")


def by_layer(rows: list[dict]) -> dict:
    """{layer: (steps, grad_norms, update_ratios)} from recorded rows, layers in the order they first appear."""
    out: dict = {}
    for r in rows:
        steps, grads, ratios = out.setdefault(r["layer"], ([], [], []))
        steps.append(int(r["step"]))
        grads.append(float(r["grad_norm"]))
        ratios.append(float(r["update_ratio"]))
    return out
