"""Generate docs/api.md from the numpydoc docstrings of adamc's public API.

Run:  python docs/gen_api.py          (rewrites docs/api.md)
tests/test_docs.py regenerates the page in memory and fails when the committed one is
out of date.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import adamc
from adamc import distributed, schedules
from adamc.algorithms import ALGORITHMS, CLASSES, METHODS

OUT = Path(__file__).resolve().parent / "api.md"

SECTIONS = [
    ("Optimizers", [*CLASSES, "Optimizer"]),
    ("Stateless steps", [a.step_name for a in ALGORITHMS.values() if a.stateless]),
    ("SciPy methods", ["minimize", *(f"minimize_{m}" for m in METHODS), "minibatches"]),
    ("Many small problems", ["minimize_many"]),
    ("Checkpoints", ["save", "load"]),
    ("Configuration", ["show_config", "set_num_threads", "get_num_threads"]),
]
DISTRIBUTED_MEMBERS = ["step", "step_count", "skipped_steps", "get_last_lr", "state_nbytes",
                       "buffer_nbytes", "consolidate", "eval", "train", "train_mode", "ema",
                       "ema_params"]
OPTIMIZER_MEMBERS = ["step", "step_count", "skipped_steps", "state_dict", "load_state_dict",
                     "reset", "add_param_group", "get_last_lr", "max_grad_norm", "clip_value",
                     "nonfinite"]


def signature(obj, name: str) -> str:
    """``name(a, b=1, *, c=2)``: the call signature without annotations."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    params = [p.replace(annotation=inspect.Parameter.empty)
              for p in sig.parameters.values() if p.name != "self"]
    plain = sig.replace(parameters=params, return_annotation=inspect.Signature.empty)
    return f"{name}{plain}".replace("'", '"')


def doc(obj) -> str:
    text = inspect.getdoc(obj) or ""
    return text.strip()


def block(title: str, sig: str, text: str, level: int = 3) -> list[str]:
    lines = [f"{'#' * level} {title}", "", "```python", sig, "```", ""]
    if text:
        lines += ["```text", text, "```", ""]
    return lines


def generate() -> str:
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/gen_api.py`; "
             "`tests/test_docs.py` fails when this page is out of date.", ""]
    for section, names in SECTIONS:
        lines += [f"## {section}", ""]
        for name in names:
            obj = getattr(adamc, name)
            if inspect.isclass(obj):
                lines += block(f"adamc.{name}", signature(obj.__init__, name), doc(obj))
                if name == "Optimizer":
                    for member in OPTIMIZER_MEMBERS:
                        attr = inspect.getattr_static(obj, member, None)
                        target = getattr(obj, member)
                        if isinstance(attr, property) or type(attr).__name__ == "getset_descriptor":
                            sig = f"Optimizer.{member}"
                        else:
                            sig = signature(target, f"Optimizer.{member}")
                        lines += block(f"Optimizer.{member}", sig, doc(target), level=4)
            else:
                lines += block(f"adamc.{name}", signature(obj, name), doc(obj))
    lines += ["## Schedules (`adamc.schedules`)", "", doc(schedules), ""]
    for name in schedules.__all__:
        if name == "Schedule":
            continue
        obj = getattr(schedules, name)
        lines += block(f"adamc.schedules.{name}", signature(obj, name), doc(obj))
    lines += ["## Distributed (`adamc.distributed`)", "", doc(distributed), ""]
    for name in distributed.__all__:
        obj = getattr(distributed, name)
        if name == "DistributedOptimizer":
            lines += block(f"adamc.distributed.{name}", signature(obj.__init__, name), doc(obj))
            for member in DISTRIBUTED_MEMBERS:
                attr = inspect.getattr_static(obj, member)
                target = getattr(obj, member)
                sig = (f"{name}.{member}" if isinstance(attr, property)
                       else signature(target, f"{name}.{member}"))
                lines += block(f"{name}.{member}", sig, doc(target), level=4)
        elif inspect.isclass(obj):
            lines += block(f"adamc.distributed.{name}", name, doc(obj))
        else:
            lines += block(f"adamc.distributed.{name}", signature(obj, name), doc(obj))
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    OUT.write_text(generate())
    print(f"wrote {OUT}", file=sys.stderr)
