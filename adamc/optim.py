"""Stateful optimizers with torch.optim's names, defaults and semantics.

Parameters are NumPy arrays updated in place; each optimizer owns its state arrays.
The per-step work lives in the compiled base class ``adamc._kernels._Engine``; this
module builds param groups, allocates state and implements the slow paths
(validation of hyperparameters, state_dict, reset).
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from . import _kernels
from ._kernels import check_beta, check_betas, check_flag, check_nonnegative

__all__ = ["Optimizer", "Adam", "AdamW"]


def _is_lr_schedule(value: Any) -> bool:
    return callable(value) and not isinstance(value, (np.ndarray, np.generic))


def _check_lr(value: Any, name: str) -> tuple[float, Callable | None]:
    """A learning rate is a number >= 0 or a callable ``step -> lr``."""
    if _is_lr_schedule(value):
        return 0.0, value
    return check_nonnegative(value, name), None


def _check_no_overlap(params: list[np.ndarray]) -> None:
    """Parameters must be distinct arrays with disjoint memory (each element is
    updated exactly once per step)."""
    ids: dict[int, int] = {}
    for i, p in enumerate(params):
        if id(p) in ids:
            raise ValueError(f"params[{ids[id(p)]}] and params[{i}] are the same array; "
                             f"some parameters appear more than once")
        ids[id(p)] = i
    spans = sorted((p.__array_interface__["data"][0], p.nbytes, i)
                   for i, p in enumerate(params) if p.nbytes)
    for (s0, n0, i), (s1, _, j) in zip(spans, spans[1:]):
        if s1 < s0 + n0:
            i, j = sorted((i, j))
            raise ValueError(f"params[{i}] and params[{j}] share memory; every parameter "
                             f"must be a separate array")


class Optimizer(_kernels._Engine):
    """Base class of adamc's optimizers (the torch.optim.Optimizer interface).

    Subclasses set ``_state_keys`` (names of the per-parameter state arrays),
    ``_hyper_keys`` (group keys read at every step) and implement ``_group_hyper``.
    """

    _algorithm: ClassVar[int]
    _state_keys: ClassVar[tuple[str, ...]]
    _hyper_keys: ClassVar[tuple[str, ...]]

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self._group_hyper(defaults, None)
        self.defaults = dict(defaults)
        self._box: tuple[list, list] | None = None
        self.param_groups = []
        self._state_arrays: list[list[np.ndarray | None]] = []
        for group in self._split_groups(params):
            self._append_group(group)
        self._rebind()

    # -- construction -----------------------------------------------------------
    @staticmethod
    def _split_groups(params: Any) -> list[dict[str, Any]]:
        if isinstance(params, np.ndarray):
            return [{"params": [params]}]
        if isinstance(params, dict):
            return [params]
        if isinstance(params, (str, bytes)) or not hasattr(params, "__iter__"):
            raise TypeError(f"params must be an ndarray, a sequence of ndarrays or a "
                            f"sequence of dicts, got {type(params).__name__}")
        items = list(params)
        if not items:
            raise ValueError("optimizer got an empty parameter list")
        if all(isinstance(it, dict) for it in items):
            return items
        if any(isinstance(it, dict) for it in items):
            raise TypeError("params mixes arrays and param-group dicts; pass one or the other")
        return [{"params": items}]

    def _checked_group(self, group: dict[str, Any], gi: int) -> dict[str, Any]:
        if "params" not in group:
            raise ValueError(f"param group {gi} has no 'params' key")
        ps = group["params"]
        ps = [ps] if isinstance(ps, np.ndarray) else ps
        if isinstance(ps, (str, bytes, dict)) or not hasattr(ps, "__iter__"):
            raise TypeError(f"param group {gi}: 'params' must be an ndarray or a sequence "
                            f"of ndarrays, got {type(ps).__name__}")
        ps = list(ps)
        if not ps:
            raise ValueError(f"param group {gi} has no parameters")
        offset = sum(len(g["params"]) for g in self.param_groups)
        for j, p in enumerate(ps):
            _kernels.check_param(p, f"params[{offset + j}]")
        new = {k: v for k, v in self.defaults.items()}
        new.update({k: v for k, v in group.items() if k != "params"})
        new["params"] = ps
        self._group_hyper(new, gi)
        return new

    def _append_group(self, group: dict[str, Any]) -> None:
        new = self._checked_group(group, len(self.param_groups))
        everything = [p for g in self.param_groups for p in g["params"]] + new["params"]
        _check_no_overlap(everything)
        states = [self._new_state(p, new) for p in new["params"]]
        self.param_groups.append(new)
        self._state_arrays.extend(states)

    def _new_state(self, param: np.ndarray, group: dict[str, Any]) -> list[np.ndarray | None]:
        return [np.zeros_like(param) if self._state_used(k, group) else None
                for k in self._state_keys]

    def _state_used(self, key: str, group: dict[str, Any]) -> bool:
        return True

    def _rebind(self) -> None:
        params, index = [], []
        for gi, g in enumerate(self.param_groups):
            params.extend(g["params"])
            index.extend([gi] * len(g["params"]))
        lower, upper = self._box if self._box is not None else (None, None)
        self._bind(self._algorithm, self._hyper_keys, params, self._state_arrays, index,
                   lower, upper)

    def _set_bounds(self, lower: list[np.ndarray], upper: list[np.ndarray]) -> None:
        """Project every parameter onto [lower[i], upper[i]] after each update (used by
        the SciPy method); the bound arrays must match the parameters."""
        params = [p for g in self.param_groups for p in g["params"]]
        for i, (p, lo, hi) in enumerate(zip(params, lower, upper)):
            _kernels.check_operand(lo, f"lower[{i}]", p, self._param_name(i))
            _kernels.check_operand(hi, f"upper[{i}]", p, self._param_name(i))
        if len(lower) != len(params) or len(upper) != len(params):
            raise ValueError("one lower and one upper bound array per parameter")
        self._box = (list(lower), list(upper))
        self._rebind()  # keeps the step counts

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group of parameters (torch.optim semantics); its step count starts at
        zero and missing hyperparameters come from the constructor's defaults."""
        self._check_idle()
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        self._append_group(param_group)
        self._rebind()  # existing groups keep their step counts, the new one starts at 0

    # -- hyperparameters ------------------------------------------------------------
    def _group_hyper(self, group: dict[str, Any], gi: int | None) -> tuple[dict, Callable | None]:
        """Validate a group's hyperparameters; return them as plain Python values and
        the learning-rate callable (or None). ``gi`` None means constructor defaults."""
        raise NotImplementedError

    @staticmethod
    def _name(key: str, gi: int | None) -> str:
        return key if gi is None else f"param_groups[{gi}]['{key}']"

    @staticmethod
    def _get(group: dict[str, Any], key: str, gi: int | None) -> Any:
        try:
            return group[key]
        except KeyError:
            where = "the defaults" if gi is None else f"param_groups[{gi}]"
            raise ValueError(f"{where} has no '{key}'") from None

    # -- state ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Copy of the optimizer's state, in torch.optim's layout.

        Returns
        -------
        dict
            ``{"state": {i: {"step": int, <state name>: ndarray, ...}},
            "param_groups": [{<hyperparameters>, "params": [i, ...]}],
            "step_count": int}``, where ``i`` numbers the parameters in group order.
            Arrays are copies: later steps do not change them.
        """
        self._check_idle()
        state, groups, i = {}, [], 0
        steps = self._group_steps()
        for gi, g in enumerate(self.param_groups):
            entry = {k: v for k, v in g.items() if k != "params"}
            entry["params"] = list(range(i, i + len(g["params"])))
            groups.append(entry)
            for _ in g["params"]:
                st = {"step": steps[gi]}
                for key, arr in zip(self._state_keys, self._state_arrays[i]):
                    if arr is not None:
                        st[key] = arr.copy()
                state[i] = st
                i += 1
        return {"state": state, "param_groups": groups, "step_count": self.step_count}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state produced by :meth:`state_dict` of a matching optimizer.

        Everything is validated first (group and parameter counts, state shapes and
        dtypes, hyperparameters); arrays are copied, so the dict stays independent.

        Raises
        ------
        ValueError, TypeError
            When the state does not match this optimizer; nothing is changed then.
        """
        self._check_idle()
        if not isinstance(state_dict, dict) or "state" not in state_dict \
                or "param_groups" not in state_dict:
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups'")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, (list, tuple)) or len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict has {len(groups) if hasattr(groups, '__len__') else '?'} "
                             f"param groups, the optimizer has {len(self.param_groups)}")
        new_groups, steps, copies, i = [], [], [], 0
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if not isinstance(saved, dict) or len(saved.get("params", ())) != len(mine["params"]):
                raise ValueError(f"param group {gi} of state_dict does not have "
                                 f"{len(mine['params'])} parameters")
            merged = {k: v for k, v in saved.items() if k != "params"}
            merged["params"] = mine["params"]
            hyper, _ = self._group_hyper(merged, gi)
            group_step = None
            for p, sid in zip(mine["params"], saved["params"]):
                st = state.get(sid) if isinstance(state, dict) else None
                if not isinstance(st, dict):
                    raise ValueError(f"state_dict has no state for parameter {sid}")
                step = st.get("step")
                if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
                    raise ValueError(f"state of parameter {sid}: 'step' must be an int >= 0, "
                                     f"got {step!r}")
                if group_step is not None and step != group_step:
                    raise ValueError(f"parameters of group {gi} have different step counts")
                group_step = int(step)
                for k, key in enumerate(self._state_keys):
                    arr = st.get(key)
                    needed = self._state_used(key, merged)
                    if arr is None:
                        if needed:
                            raise ValueError(f"state of parameter {sid} has no '{key}'")
                        continue
                    if not isinstance(arr, np.ndarray):
                        raise TypeError(f"state[{sid}]['{key}'] must be an ndarray, got "
                                        f"{type(arr).__name__}")
                    if arr.dtype != p.dtype:
                        raise TypeError(f"state[{sid}]['{key}'] has dtype {arr.dtype}, the "
                                        f"parameter has {p.dtype}")
                    if arr.shape != p.shape:
                        raise ValueError(f"state[{sid}]['{key}'] has shape {arr.shape}, the "
                                         f"parameter has {p.shape}")
                    copies.append((i, k, arr))
                i += 1
            new_groups.append(merged)
            steps.append(group_step if group_step is not None else 0)
        count = state_dict.get("step_count", max(steps))
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"'step_count' must be an int >= 0, got {count!r}")
        # Allocate what is missing before changing anything, then commit.
        targets = [s[:] for s in self._state_arrays]
        for i, k, arr in copies:
            if targets[i][k] is None:
                targets[i][k] = np.empty_like(arr)
        for i, k, arr in copies:
            np.copyto(targets[i][k], arr)
        for i, st in enumerate(targets):
            for k, key in enumerate(self._state_keys):
                if st[k] is not None and not any(c[0] == i and c[1] == k for c in copies):
                    st[k].fill(0)
        self._state_arrays = targets
        for mine, merged in zip(self.param_groups, new_groups):
            mine.clear()
            mine.update(merged)
        self._rebind()
        self._set_group_steps(steps, int(count))

    def reset(self) -> None:
        """Zero every state array and the step counts (hyperparameters are kept)."""
        self._check_idle()
        for st in self._state_arrays:
            for arr in st:
                if arr is not None:
                    arr.fill(0)
        self._set_group_steps([0] * len(self.param_groups), 0)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {gi}")
            sizes = ", ".join(str(p.shape) for p in g["params"])
            lines.append(f"    params: {sizes}")
            for k in sorted(k for k in g if k != "params"):
                lines.append(f"    {k}: {g[k]!r}")
        lines.append(")")
        return "\n".join(lines)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015) with torch.optim.Adam's defaults and semantics.

    Per step ``t`` and element, with ``g`` the gradient (negated when maximizing)::

        g  = g + weight_decay * p            (L2 term; AdamW decays p instead)
        m  = m + (1 - beta1) * (g - m)
        v  = beta2 * v + (1 - beta2) * g * g
        v' = max(v_max, v) if amsgrad else v
        p  = p - lr / (1 - beta1**t) * m / (sqrt(v') / sqrt(1 - beta2**t) + eps)

    computed as ``p - step_size * m / (sqrt(v') + eps_hat)`` with
    ``step_size = lr * sqrt(bc2) / bc1`` and ``eps_hat = eps * sqrt(bc2)`` (the same
    mathematics with one division fewer per element).

    Parameters
    ----------
    params : ndarray, sequence of ndarray, or sequence of dict
        Arrays to optimize (float32 or float64, C-contiguous, writeable; updated in
        place), or torch-style parameter groups: dicts with a ``"params"`` entry and
        optional per-group hyperparameters.
    lr : float or callable, optional
        Learning rate (default 1e-3), or a callable ``step -> lr`` called with the
        1-based number of the update being computed.
    betas : (float, float), optional
        Decay rates of the first and second moment estimates (default (0.9, 0.999)).
    eps : float, optional
        Term added to the denominator, outside the square root (default 1e-8).
    weight_decay : float, optional
        L2 penalty coefficient (default 0).
    amsgrad : bool, optional
        Use the maximum of past second moments (Reddi et al., 2018). Default False.
    maximize : bool, optional
        Maximize the objective (default False).
    decoupled_weight_decay : bool, optional
        Decay the parameters directly, as AdamW does (default False).

    Examples
    --------
    >>> import numpy as np, adamc
    >>> x = np.array([8.0])
    >>> opt = adamc.Adam(x, lr=0.1)
    >>> for _ in range(100):
    ...     opt.step(2 * (x - 2))          # gradient of (x - 2)**2
    >>> opt.step_count
    100
    """

    _algorithm = _kernels.ALGO_ADAM
    _state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _hyper_keys = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                   "decoupled_weight_decay")

    def __init__(self, params: Any, lr: float | Callable[[int], float] = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *,
                 maximize: bool = False, decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _state_used(self, key: str, group: dict[str, Any]) -> bool:
        return key != "max_exp_avg_sq" or bool(group["amsgrad"])

    def _group_hyper(self, group, gi):
        name, get = self._name, self._get
        lr, lr_fn = _check_lr(get(group, "lr", gi), name("lr", gi))
        betas = check_betas(get(group, "betas", gi), name("betas", gi))
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])  # a list could be edited unseen
        hyper = {
            "lr": lr,
            "betas": betas,
            "eps": check_nonnegative(get(group, "eps", gi), name("eps", gi)),
            "weight_decay": check_nonnegative(get(group, "weight_decay", gi),
                                              name("weight_decay", gi)),
            "amsgrad": check_flag(get(group, "amsgrad", gi), name("amsgrad", gi)),
            "maximize": check_flag(get(group, "maximize", gi), name("maximize", gi)),
            "decoupled_weight_decay": check_flag(get(group, "decoupled_weight_decay", gi),
                                                 name("decoupled_weight_decay", gi)),
        }
        return hyper, lr_fn


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as
    torch.optim.AdamW: ``p *= 1 - lr * weight_decay`` before the Adam update.

    Parameters are those of :class:`Adam`; ``weight_decay`` defaults to 1e-2.
    """

    def __init__(self, params: Any, lr: float | Callable[[int], float] = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True)
