"""AdamW with its moments sharded over the ranks of an MPI job (ZeRO stage 1).

Why: AdamW keeps two moments per parameter, twice the model's own memory, and in plain data parallelism every
rank keeps all of them. Here each rank keeps the moments of 1/size of the flat parameter buffer, updates only
that stretch of the parameters, and an all-gather then hands every rank the whole updated buffer. The gradient
is the all-reduced one every rank already holds (stage 1 shards the optimizer state only), so the update of each
element is the very computation the unsharded AdamW makes: the parameters are identical, bit for bit.

    opt = ZeroAdamW(param_groups(model.named_parameters(), 0.1), lr=1e-3, betas=(0.9, 0.99), comm=comm)
    ...                      # backward through MPIDataParallel: every rank holds the global gradient
    opt.step()               # each rank updates its shard; Allgatherv then makes the parameters whole again
    opt.memory_bytes()       # this rank's moments: about 1/size of AdamW's

Checkpoints: ``state_dict()`` (every rank must call it: the moments are gathered on rank 0) returns on rank 0
exactly what ``AdamW.state_dict()`` returns, so a sharded run resumes unsharded, on another number of ranks, or
the other way round; ``load_state_dict`` takes that state on every rank and keeps its own stretch.

Requirements: the NumPy backend (the all-gather goes through MPI on the host), and parameters and gradients
that each tile one flat buffer in the same layout (``Module.flatten_parameters``; GPT models are flat from the
start, and ``ProcessDataParallel`` keeps them so).
"""

from __future__ import annotations

import numpy as np

from .. import backend
from ..kernels import ops
from ..state import state_mismatches
from .optim import AdamW, _address, _span


class ZeroAdamW(AdamW):
    """AdamW (same update, hyperparameters and state format) whose moments live sharded across ``comm``'s ranks.

    params, lr, betas, eps, weight_decay: as ``AdamW``. comm: an mpi4py communicator (default COMM_WORLD).
    """

    _buffers = ()  # the base class allocates no full-size moments; ours are the shard below

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, comm=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        from ..parallel.mpi import mpi, world

        self.MPI = mpi()
        self.comm = world() if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        params = self.parameters()
        if any(not backend.on_host(p.data) for p in params):
            raise ValueError("ZeroAdamW: runs on the NumPy backend (its all-gather goes through MPI on the host); "
                             "on a GPU use AdamW")
        self._find_buffers()
        n = self._param_buffer.size
        bounds = np.linspace(0, n, self.size + 1).round().astype(np.int64)  # rank r owns [bounds[r], bounds[r+1])
        self._counts = [int(b - a) for a, b in zip(bounds[:-1], bounds[1:])]
        self._displs = [int(a) for a in bounds[:-1]]
        self.shard = (self._displs[self.rank], self._displs[self.rank] + self._counts[self.rank])
        dtype = self._param_buffer.dtype
        self.exp_avg = np.zeros(self._counts[self.rank], dtype=dtype)
        self.exp_avg_sq = np.zeros(self._counts[self.rank], dtype=dtype)
        # each group's stretch of the flat buffer (flatten_parameters lays the groups out one after the other)
        self._ranges = []
        for gi, group in enumerate(self.param_groups):
            starts = sorted((self._offsets[id(p)], p.size) for p in group["params"])
            for (a, size), (b, _) in zip(starts, starts[1:]):
                if a + size != b:
                    raise ValueError(f"ZeroAdamW: parameter group {gi} is not one stretch of the flat buffer; "
                                     "make the groups with param_groups() and flatten the model")
            self._ranges.append((starts[0][0], starts[-1][0] + starts[-1][1]))

    def _find_buffers(self) -> None:
        """The flat parameter and gradient buffers the parameters are views of, and each one's offset."""
        params = self.parameters()
        self._param_buffer, self._offsets = self._tiling([p.data for p in params], "parameters")
        self._grad_buffer, grad_offsets = self._tiling([p.grad for p in params], "gradients")
        if grad_offsets != self._offsets:
            raise ValueError("ZeroAdamW: the gradients are not laid out like the parameters; call "
                             "model.flatten_parameters() before making the optimizer")
        self._arrays = [a for p in params for a in (p.data, p.grad)]

    def _check_buffers(self) -> None:
        """Parameters moved to other memory since (ProcessDataParallel moves them into shared memory): find the
        buffers again; the layout must be the same."""
        if all(a is b for a, b in zip(self._arrays, (a for p in self.parameters() for a in (p.data, p.grad)))):
            return
        size, offsets = self._param_buffer.size, self._offsets
        self._find_buffers()
        if self._param_buffer.size != size or self._offsets != offsets:
            raise ValueError("ZeroAdamW: the parameters were laid out anew since the optimizer was made; make it "
                             "again")

    def _tiling(self, arrays, what: str):
        span = _span(arrays)
        if span is None:
            raise ValueError(f"ZeroAdamW: the {what} do not tile one flat buffer; call model.flatten_parameters() "
                             "before making the optimizer")
        start = _address(span)
        return span, {id(p): (_address(a) - start) // a.itemsize for p, a in zip(self.parameters(), arrays)}

    # -- memory ------------------------------------------------------------------------------------------------
    def memory_bytes(self) -> int:
        """Bytes of optimizer state this rank holds (its two moment shards)."""
        return self.exp_avg.nbytes + self.exp_avg_sq.nbytes

    def unsharded_bytes(self) -> int:
        """Bytes AdamW would hold on every rank: two moments for every parameter."""
        return 2 * self._param_buffer.nbytes

    # -- stepping -----------------------------------------------------------------------------------------------
    def step(self) -> None:
        """Update this rank's shard of the parameters, then all-gather the whole buffer (a collective)."""
        self._check_buffers()
        self.step_count += 1
        a, b = self.shard
        P, G = self._param_buffer, self._grad_buffer
        for group, (g0, g1) in zip(self.param_groups, self._ranges):
            lo, hi = max(a, g0), min(b, g1)
            if lo >= hi:
                continue
            b1, b2 = group["betas"]
            ops.adamw_update(P[lo:hi], G[lo:hi], self.exp_avg[lo - a:hi - a], self.exp_avg_sq[lo - a:hi - a],
                             lr=float(group["lr"]), beta1=b1, beta2=b2, eps=float(group["eps"]),
                             weight_decay=float(group["weight_decay"]), step=self.step_count)
        self.comm.Allgatherv(self.MPI.IN_PLACE, [P, (self._counts, self._displs)])

    # -- state: AdamW's format ----------------------------------------------------------------------------------
    def _scalars(self) -> dict:
        groups = []
        for g in self.param_groups:
            entry = {k: (list(g[k]) if isinstance(g[k], tuple) else g[k]) for k in (*self._hyper, "lr_scale")}
            entry["params"] = list(g["names"])
            groups.append(entry)
        return {"kind": "AdamW", "step": int(self.step_count), "base_lr": float(self.base_lr), "param_groups": groups}

    def state_dict(self) -> dict:
        """AdamW's state dict, gathered on rank 0 (a collective: call it on every rank). Other ranks get the
        scalar entries only."""
        out = self._scalars()
        full = {}
        for name, shard in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
            whole = np.empty(self._param_buffer.size, dtype=shard.dtype) if self.rank == 0 else None
            recv = [whole, (self._counts, self._displs)] if self.rank == 0 else None
            self.comm.Gatherv(shard, recv, root=0)
            full[name] = whole
        if self.rank == 0:
            for g in self.param_groups:
                for pname, p in zip(g["names"], g["params"]):
                    o = self._offsets[id(p)]
                    for name, whole in full.items():
                        out[f"{name}/{pname}"] = whole[o:o + p.size].reshape(p.data.shape).copy()
        return out

    def load_state_dict(self, state: dict) -> None:
        """Take AdamW's state dict (the whole of it, on every rank) and keep this rank's stretch of the moments."""
        problems = []
        if state.get("kind") != "AdamW":
            problems.append(f"the state is for {state.get('kind')!r}, this optimizer keeps 'AdamW' state")
        for key in ("step", "base_lr", "param_groups"):
            if key not in state:
                problems.append(f"missing entry {key!r}")
        saved = state.get("param_groups", [])
        if len(saved) != len(self.param_groups):
            problems.append(f"{len(saved)} parameter groups in the state, {len(self.param_groups)} here")
        else:
            for gi, (sg, g) in enumerate(zip(saved, self.param_groups)):
                if list(sg.get("params", [])) != g["names"]:
                    problems.append(f"group {gi}: parameters {sg.get('params')} in the state, {g['names']} here")
                missing = [k for k in (*self._hyper, "lr_scale") if k not in sg]
                if missing:
                    problems.append(f"group {gi}: missing hyperparameters {missing}")
        expected = {f"{b}/{name}": (tuple(p.data.shape), np.dtype(p.data.dtype))
                    for g in self.param_groups for name, p in zip(g["names"], g["params"])
                    for b in ("exp_avg", "exp_avg_sq")}
        arrays = {k: v for k, v in state.items() if k not in ("kind", "step", "base_lr", "param_groups")}
        problems += state_mismatches(expected, arrays)
        if problems:
            raise ValueError("ZeroAdamW.load_state_dict: the state does not fit this optimizer; " + "; ".join(problems))
        for sg, g in zip(saved, self.param_groups):
            hyper = {k: (tuple(sg[k]) if isinstance(g[k], tuple) else sg[k]) for k in (*self._hyper, "lr_scale")}
            self._check_hyper(hyper, "ZeroAdamW.load_state_dict")
            g.update(hyper)
        self.step_count = int(state["step"])
        self.base_lr = float(state["base_lr"])
        a, b = self.shard
        for g in self.param_groups:
            for name, p in zip(g["names"], g["params"]):
                o = self._offsets[id(p)]
                lo, hi = max(a, o), min(b, o + p.size)
                if lo < hi:
                    for buf, key in ((self.exp_avg, "exp_avg"), (self.exp_avg_sq, "exp_avg_sq")):
                        saved = np.asarray(state[f"{key}/{name}"], dtype=buf.dtype).reshape(-1)
                        buf[lo - a:hi - a] = saved[lo - o:hi - o]
