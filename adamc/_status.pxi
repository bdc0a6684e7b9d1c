# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# How a run of adamc.minimize, and each problem of adamc.minimize_many, ends: the
# status codes, the reasons the compiled loop of minimize returns, and their
# messages, defined here once. The compiled loops (_minimize_loop.pxi,
# _minimize_many_loop.pxi, _minimize_many_c_fits.pxi) use the C names; adamc._fitting.minimize
# and adamc._fitting.many use _Status and the tables below.

from enum import IntEnum as _IntEnum

cdef enum:
    # the result's ``status``
    _ST_CONVERGED = 0           # a tolerance met, batches exhausted, a plateau at min_lr
    _ST_MAXITER = 1
    _ST_MAXFEV = 2
    _ST_NONFINITE = 3           # the result is the last iterate where f and g were finite
    _ST_CALLBACK = 99           # the callback raised StopIteration
    # a problem of minimize_many still iterating (never in a result)
    _ST_RUNNING = -1


class _Status(_IntEnum):
    """The status codes of adamc.minimize and adamc.minimize_many (the C enum _ST_*).
    A result's ``status`` is a plain int: the tables below hold ints."""
    CONVERGED = _ST_CONVERGED
    MAXITER = _ST_MAXITER
    MAXFEV = _ST_MAXFEV
    NONFINITE = _ST_NONFINITE
    CALLBACK = _ST_CALLBACK
    RUNNING = _ST_RUNNING


#: What each status of a minimize_many problem is called in the result's message.
_STATUS_TEXT = {_ST_CONVERGED: "converged", _ST_MAXITER: "reached maxiter",
                _ST_MAXFEV: "reached maxfev",
                _ST_NONFINITE: "had a non-finite objective or gradient",
                _ST_CALLBACK: "stopped by the callback"}

_STOP_MESSAGE = "`callback` raised `StopIteration`."
_MAXITER_MESSAGE = "Maximum number of iterations has been exceeded."
_MAXFEV_MESSAGE = "Maximum number of function evaluations has been exceeded."

# The reasons the compiled loop of minimize ends (its return value names one, by the
# enum _R_*, in this order)
cdef enum:
    _R_MAXITER, _R_NONFINITE, _R_CALLBACK, _R_BATCHES, _R_GTOL, _R_FTOL, _R_XTOL, _R_MAXFEV,
    _R_PLATEAU

#: What the loop returns as the reason it ended; _LOOP_OUTCOMES maps each to a status
#: and a message.
LOOP_REASONS = ("maxiter", "nonfinite", "callback", "batches", "gtol", "ftol", "xtol",
                "maxfev", "plateau")

#: The end of a minimize run by the reason the compiled loop returns: (status,
#: message); "nonfinite"'s message is a template of the iteration where f or g was not
#: finite and the iteration of the result.
_LOOP_OUTCOMES = {
    "maxiter": (_ST_MAXITER, _MAXITER_MESSAGE),
    "nonfinite": (_ST_NONFINITE,
                  "The objective or its gradient is not finite at iteration {}; the "
                  "result is the last iterate where both were finite (iteration {})."),
    "callback": (_ST_CALLBACK, _STOP_MESSAGE),
    "batches": (_ST_CONVERGED,
                "Optimization terminated successfully: the batches are exhausted."),
    "gtol": (_ST_CONVERGED, "Optimization terminated successfully: |g|_inf <= gtol."),
    "ftol": (_ST_CONVERGED, "Optimization terminated successfully: the relative change "
                            "of f is <= ftol."),
    "xtol": (_ST_CONVERGED,
             "Optimization terminated successfully: the change of x is <= xtol."),
    "maxfev": (_ST_MAXFEV, _MAXFEV_MESSAGE),
    "plateau": (_ST_CONVERGED, "Optimization terminated successfully: f stopped improving "
                               "with the learning rate at its min_lr (reduce_on_plateau)."),
}

#: The end of a minimize run at its first evaluation (no iteration made): (status,
#: message).
_START_OUTCOMES = {
    "nonfinite": (_ST_NONFINITE, "The objective or its gradient is not finite at the "
                                 "starting point (x0 is returned)."),
    "gtol": (_ST_CONVERGED, "Optimization terminated successfully: |g|_inf <= gtol at x0."),
}
