# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# Algorithms of the kernels and their hyperparameters

def _kernel_algorithms():
    """Name -> enum value of every algorithm of src_c/adamc.h (ADAMC_ALGORITHMS),
    after checking that every SIMD level compiled in has a kernel for each."""
    cdef int a, d, level
    cdef const adamc_kernels *k
    names = {}
    for a in range(ADAMC_NUM_ALGOS):
        if adamc_algorithm_name(a) == NULL:
            raise ImportError(f"adamc: algorithm {a} has no name")
        names[adamc_algorithm_name(a).decode()] = a
    for level in range(len(LEVEL_NAMES)):
        k = adamc_kernels_at(level)
        if k == NULL:
            continue
        for d in range(2):
            if k.sumsq[d] == NULL or k.first_nonfinite[d] == NULL or k.prodigy_stats[d] == NULL \
                    or k.max_abs[d] == NULL:
                raise ImportError(f"adamc: {LEVEL_NAMES[level]} lacks a reduction kernel")
            for a in range(ADAMC_NUM_ALGOS):
                if k.step[a][d] == NULL:
                    raise ImportError(f"adamc: {LEVEL_NAMES[level]} has no kernel for "
                                      f"{adamc_algorithm_name(a).decode()}")
    return names


ALGORITHMS = _kernel_algorithms()


def aux_initial(int algo):
    """Initial value of an algorithm's per-group scalar state."""
    if not 0 <= algo < ADAMC_NUM_ALGOS:
        raise ValueError(f"unknown algorithm {algo}")
    return adamc_aux_initial(algo)


cdef int _fill_hyper(adamc_hyper *h, dict v) except -1:
    """Copy validated hyperparameters (see Optimizer._group_hyper) into a C struct."""
    h.lr = v.get("lr", 0.0)
    h.beta1, h.beta2 = v.get("betas", (0.0, 0.0))
    h.eps = v.get("eps", 0.0)
    h.weight_decay = v.get("weight_decay", 0.0)
    h.momentum_decay = v.get("momentum_decay", 0.0)
    h.momentum = v.get("momentum", 0.0)
    h.dampening = v.get("dampening", 0.0)
    h.alpha = v.get("alpha", 0.0)
    h.decoupled = v.get("decoupled_weight_decay", False)
    h.amsgrad = v.get("amsgrad", False)
    h.maximize = v.get("maximize", False)
    h.nesterov = v.get("nesterov", False)
    h.centered = v.get("centered", False)
    beta3 = v.get("beta3")
    h.beta3 = -1.0 if beta3 is None else beta3  # < 0: sqrt(beta2), Prodigy's default
    h.d0 = v.get("d0", 0.0)
    h.d_coef = v.get("d_coef", 0.0)
    h.growth_rate = v.get("growth_rate", 0.0)
    h.bias_correction = v.get("use_bias_correction", False)
    h.safeguard_warmup = v.get("safeguard_warmup", False)
    h.warmup_steps = v.get("warmup_steps", 0)
    h.r = v.get("r", 0.0)
    h.weight_lr_power = v.get("weight_lr_power", 0.0)
    h.lr_decay = v.get("lr_decay", 0.0)
    h.initial_accumulator_value = v.get("initial_accumulator_value", 0.0)
    h.rho = v.get("rho", 0.0)
    h.etaminus, h.etaplus = v.get("etas", (0.0, 0.0))
    h.step_size_min, h.step_size_max = v.get("step_sizes", (0.0, 0.0))
    if "decouple" in v:
        h.decoupled = v["decouple"]
    return 0


cdef inline void *_data_or_null(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


# ---------------------------------------------------------------------------------
# Compiled stateless steps (adamc.functional builds one _StepSpec and one _StepFunction
# per algorithm of adamc.algorithms: the public *_step callables). Every
# check runs before anything is written, with the messages of the classes' checks.

cdef enum:
    _KIND_LR = 0
    _KIND_BETA = 1
    _KIND_NONNEG = 2
    _KIND_UNIT = 3
    _KIND_FLAG = 4
    _KIND_POSITIVE = 5
    _KIND_OPTIONAL_BETA = 6
    _KIND_GROWTH = 7
    _KIND_ETAMINUS = 8
    _KIND_ETAPLUS = 9

# (the kinds of adamc.algorithms.HYPERPARAMETERS; "etaminus" and "etaplus" are the two
# halves of Rprop's etas)
_STEP_KINDS = ("lr", "beta", "nonneg", "unit", "flag", "positive", "optional_beta", "growth",
               "etaminus", "etaplus")
# Fields of adamc_hyper a stateless step can set, by argument name.
_STEP_FIELDS = ("lr", "beta1", "beta2", "eps", "weight_decay", "momentum_decay", "momentum",
                "dampening", "alpha", "decoupled_weight_decay", "amsgrad", "maximize",
                "nesterov", "centered", "beta3", "d0", "d_coef", "growth_rate", "decouple",
                "use_bias_correction", "safeguard_warmup", "lr_decay",
                "initial_accumulator_value", "rho", "etaminus", "etaplus", "step_size_min",
                "step_size_max")
cdef enum:
    _F_LR, _F_BETA1, _F_BETA2, _F_EPS, _F_WD, _F_MDECAY, _F_MOMENTUM, _F_DAMPENING
    _F_ALPHA, _F_DECOUPLED, _F_AMSGRAD, _F_MAXIMIZE, _F_NESTEROV, _F_CENTERED
    _F_BETA3, _F_D0, _F_D_COEF, _F_GROWTH, _F_DECOUPLE, _F_BIAS_CORRECTION, _F_SAFEGUARD
    _F_LR_DECAY, _F_INITIAL_ACC, _F_RHO, _F_ETAMINUS, _F_ETAPLUS, _F_STEP_MIN, _F_STEP_MAX
    _F_COUNT
    _MAX_ARGS = 16
    _MAX_SLOTS = _MAX_ARGS + 8
    _AUX_PRODIGY = 3
    _NONE_BETA = -3             # _hyper_value of an optional beta passed as None

# "prodigy": Prodigy's optimizer-wide scalars d, d_max, d_numerator (arguments, returned
# after the step; see _prodigy_core)
_STEP_AUX = ("none", "mu_product", "buffer_started", "prodigy")
_AUX_NAMES = ((None,), ("mu_product",), (None,), ("d", "d_max", "d_numerator"))


cdef double _unit(object value, str name) except? -1.0:
    cdef double x = _nonneg(value, name)
    if x > 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return x


cdef inline bint _is_schedule(object value):
    return isinstance(value, Schedule) or (
        callable(value) and not isinstance(value, (np.ndarray, np.generic)))


@cython.final
@cython.auto_pickle(False)
cdef class _StepSpec:
    """How the stateless step of one algorithm reads its arguments.

    Parameters
    ----------
    algo : int
        Kernel algorithm (a value of ``ALGORITHMS``).
    names, kinds : sequence of str
        Hyperparameter arguments in call order, and their checks (``_STEP_KINDS``);
        every name must be one of ``_STEP_FIELDS``.
    state_names : sequence of str
        State arrays in kernel order (at most 3; Prodigy: 4, the last one p0).
    state_flags : sequence of str or None
        Per state, the argument whose truth requires it (None: always required).
    state_needs : sequence of str
        Per state, how messages name that condition (e.g. ``"amsgrad=True"``).
    aux : str
        The per-group scalar state: ``"none"``, ``"mu_product"`` (an argument,
        returned after the step), ``"buffer_started"`` (from the step number) or
        ``"prodigy"`` (the three scalars of Prodigy, arguments and returned).
    """
    cdef int algo, nhyper, nstates, aux_mode, naux
    cdef int kinds[_MAX_ARGS]
    cdef int fields[_MAX_ARGS]
    cdef int state_flag[4]
    cdef readonly tuple names, state_names, state_needs

    def __init__(self, int algo, names, kinds, state_names, state_flags, state_needs,
                 str aux="none"):
        cdef int k
        if not 0 <= algo < ADAMC_NUM_ALGOS:
            raise ValueError(f"unknown algorithm {algo}")
        names, kinds = tuple(names), tuple(kinds)
        if len(names) != len(kinds) or len(names) > _MAX_ARGS:
            raise ValueError("names and kinds must have the same length (at most 16)")
        state_names, state_flags = tuple(state_names), tuple(state_flags)
        if len(state_flags) != len(state_names) or len(state_needs) != len(state_names):
            raise ValueError("each state needs a flag and a condition")
        if aux not in _STEP_AUX:
            raise ValueError(f"unknown aux {aux!r}")
        if not (len(state_names) == 4 and all(f is None for f in state_flags)
                if aux == "prodigy" else 1 <= len(state_names) <= 3):
            raise ValueError("one to three states (prodigy: four, all required)")
        self.algo = algo
        self.names, self.state_names = names, state_names
        self.state_needs = tuple(state_needs)
        self.nhyper, self.nstates = len(names), len(state_names)
        for k in range(self.nhyper):
            self.kinds[k] = _STEP_KINDS.index(kinds[k])
            self.fields[k] = _STEP_FIELDS.index(names[k])
        for k in range(self.nstates):
            self.state_flag[k] = -1 if state_flags[k] is None else names.index(state_flags[k])
        self.aux_mode = _STEP_AUX.index(aux)
        self.naux = len(_AUX_NAMES[self.aux_mode])
        if 4 + self.nstates + self.naux + self.nhyper > _MAX_SLOTS:
            raise ValueError("too many arguments")


cdef void _run_task(adamc_chunk_fn fn, const adamc_task *task, Py_ssize_t n, int kind,
                    Py_ssize_t nbytes) noexcept:
    """Run one kernel task holding a thread token; the GIL is released from
    _nogil_min_bytes on."""
    if nbytes >= _nogil_min_bytes:
        with nogil:
            adamc_enter()
            adamc_run(fn, task, n, kind, nbytes)
            adamc_leave()
    else:
        _enter_holding_gil()
        adamc_run(fn, task, n, kind, nbytes)
        adamc_leave()


cdef extern from "Python.h":
    # The calling convention of CPython's own functions (PEP 590): positional and
    # keyword arguments arrive as one C array plus a tuple of keyword names, so a call
    # builds neither an argument tuple nor a keyword dict.
    ctypedef void *vectorcallfunc
    Py_ssize_t PyVectorcall_NARGS(size_t nargsf)
    object PyVectorcall_Call(object callable, object args, object kwargs)
    unsigned long Py_TPFLAGS_HAVE_VECTORCALL
    ctypedef struct _VectorcallType "PyTypeObject":
        Py_ssize_t tp_vectorcall_offset
        unsigned long tp_flags
    Py_ssize_t PyTuple_GET_SIZE(object p)
    PyObject *PyTuple_GET_ITEM(object p, Py_ssize_t pos)
    long long PyLong_AsLongLongAndOverflow(object pylong, int *overflow) except? -1


cdef double _hyper_value(int kind, object v, str name) except -1.0:
    """The checked value of one hyperparameter argument (see _STEP_KINDS); -2.0 for
    a schedule or callable lr (refused by the caller), _NONE_BETA for an optional
    beta passed as None."""
    if kind == _KIND_FLAG:
        if v is True:
            return 1.0
        if v is False:
            return 0.0
        return 1.0 if _flag(v, name) else 0.0
    cdef double x
    if PyFloat_Check(v) and kind <= _KIND_NONNEG and kind != _KIND_BETA:
        x = PyFloat_AS_DOUBLE(v)
        if not (x >= 0.0) or not isfinite(x):
            _nonneg(v, name)  # raises with the usual message
        return x
    if kind == _KIND_LR:
        if _is_schedule(v):
            return -2.0
        return _nonneg(v, name)
    if kind == _KIND_BETA:
        return _beta(v, name)
    if kind == _KIND_UNIT:
        return _unit(v, name)
    if kind == _KIND_OPTIONAL_BETA:
        return _NONE_BETA if v is None else _beta(v, name)
    if kind == _KIND_POSITIVE:
        return _positive(v, name)
    if kind == _KIND_GROWTH:
        return _growth(v, name)
    if kind == _KIND_ETAMINUS:
        return _etaminus(v, name)
    if kind == _KIND_ETAPLUS:
        return _etaplus(v, name)
    return _nonneg(v, name)


cdef object _step_core(_StepFunction fn, object param, object grad, PyObject **states,
                       object step, object aux, PyObject **hyper):
    """One stateless update of ``param`` in place (see ``_StepSpec``; ``states`` and
    ``hyper`` hold spec.nstates and spec.nhyper borrowed references, None for an
    absent state); returns the scalar state after the step for
    ``aux="mu_product"``, else None."""
    cdef _StepSpec spec = fn.spec
    cdef double vals[_MAX_ARGS]
    cdef double fv[_F_COUNT]
    cdef int k, nh = spec.nhyper, nstates = spec.nstates
    cdef bint lr_schedule = False
    cdef double x, a = 0.0, aux_next
    cdef PyObject *obj
    for k in range(_F_COUNT):
        fv[k] = 0.0
    # hyperparameters, in call order; a default (the very object) was checked once,
    # when the function was made
    for k in range(nh):
        obj = hyper[k]
        if obj == fn.hyper_default[k]:
            x = fn.hyper_default_value[k]
        else:
            x = _hyper_value(spec.kinds[k], <object>obj, <str>spec.names[k])
            if x == -2.0:
                lr_schedule = True
                x = 0.0
        vals[k] = x
        fv[spec.fields[k]] = x
    if lr_schedule:
        raise TypeError("lr of a stateless step must be a number; pass schedule(step) "
                        "(schedules belong to the optimizer classes)")
    if fv[_F_STEP_MIN] > fv[_F_STEP_MAX]:
        raise ValueError(f"step_size_min must be <= step_size_max (got {fv[_F_STEP_MIN]!r} "
                         f"and {fv[_F_STEP_MAX]!r})")
    if fv[_F_NESTEROV] != 0.0 and (fv[_F_MOMENTUM] <= 0 or fv[_F_DAMPENING] != 0):
        raise ValueError(f"Nesterov momentum requires momentum > 0 and dampening = 0 "
                         f"(got momentum={fv[_F_MOMENTUM]}, dampening={fv[_F_DAMPENING]})")
    # optional state: present exactly when its flag asks for it
    for k in range(nstates):
        if spec.state_flag[k] < 0:
            continue
        if vals[spec.state_flag[k]] != 0.0:
            if states[k] == <PyObject *>None:
                raise ValueError(f"{spec.state_needs[k]} needs {spec.state_names[k]} "
                                 f"(start it from zeros)")
        elif states[k] != <PyObject *>None:
            raise ValueError(f"{spec.state_names[k]} is only used with {spec.state_needs[k]}")
    if spec.aux_mode == 1:
        if PyFloat_Check(aux) and 0.0 <= PyFloat_AS_DOUBLE(aux) <= 1.0:
            a = PyFloat_AS_DOUBLE(aux)
        else:
            a = _unit(aux, "mu_product")
    # arrays
    if not cnp.PyArray_Check(param) or not _float_type(cnp.PyArray_TYPE(<cnp.ndarray>param)):
        raise _operand_error(param, "param", None, "", True, True)
    cdef int type_num = cnp.PyArray_TYPE(<cnp.ndarray>param)
    cdef int ndim = cnp.PyArray_NDIM(<cnp.ndarray>param)
    cdef const cnp.npy_intp *dims = cnp.PyArray_DIMS(<cnp.ndarray>param)
    if not _operand_ok(param, type_num, ndim, dims, _REQ_WRITE):
        raise _operand_error(param, "param", None, "", True, True)
    if not _operand_ok(grad, type_num, ndim, dims, _REQ_READ):
        raise _operand_error(grad, "grad", param, "param", False)
    cdef adamc_task task
    for k in range(nstates):
        obj = states[k]
        if obj == <PyObject *>None:
            if spec.state_flag[k] < 0:  # a required state passed as None
                raise _operand_error(None, spec.state_names[k], param, "param", True, True)
            task.state[k] = NULL
            continue
        if not _operand_ok(<object>obj, type_num, ndim, dims, _REQ_WRITE):
            raise _operand_error(<object>obj, spec.state_names[k], param, "param", True, True)
        task.state[k] = cnp.PyArray_DATA(<cnp.ndarray>obj)
    for k in range(nstates, 3):
        task.state[k] = NULL
    # every operand now has param's dtype and shape, hence its size in bytes
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray>param)
    cdef Py_ssize_t nbytes = n * (4 if type_num == cnp.NPY_FLOAT else 8)
    task.param = cnp.PyArray_DATA(<cnp.ndarray>param)
    task.grad = cnp.PyArray_DATA(<cnp.ndarray>grad)
    if nbytes > 0:
        _check_step_disjoint(spec, <const char *>task.param, <const char *>task.grad,
                             task.state, nbytes)
    cdef int64_t t
    cdef int overflow = 0
    if PyLong_CheckExact(step):
        t = PyLong_AsLongLongAndOverflow(step, &overflow)
        if overflow or not 1 <= t <= (<int64_t>1) << 62:
            t = _step_number(step, "step")
    else:
        t = _step_number(step, "step")
    if spec.aux_mode == 2:
        a = 0.0 if t == 1 else 1.0
    elif spec.aux_mode == 0:
        a = adamc_aux_initial(spec.algo)
    # prepare and run
    cdef adamc_hyper h
    cdef adamc_coef coef
    h.lr, h.beta1, h.beta2 = fv[_F_LR], fv[_F_BETA1], fv[_F_BETA2]
    h.eps, h.weight_decay, h.momentum_decay = fv[_F_EPS], fv[_F_WD], fv[_F_MDECAY]
    h.momentum, h.dampening, h.alpha = fv[_F_MOMENTUM], fv[_F_DAMPENING], fv[_F_ALPHA]
    h.decoupled = fv[_F_DECOUPLED] != 0.0
    h.amsgrad = fv[_F_AMSGRAD] != 0.0
    h.maximize = fv[_F_MAXIMIZE] != 0.0
    h.nesterov = fv[_F_NESTEROV] != 0.0
    h.centered = fv[_F_CENTERED] != 0.0
    h.lr_decay, h.initial_accumulator_value = fv[_F_LR_DECAY], fv[_F_INITIAL_ACC]
    h.rho, h.etaminus, h.etaplus = fv[_F_RHO], fv[_F_ETAMINUS], fv[_F_ETAPLUS]
    h.step_size_min, h.step_size_max = fv[_F_STEP_MIN], fv[_F_STEP_MAX]
    if _prepare_step(spec.algo, &h, t, a, INFINITY, False, &coef, &aux_next) != 0:
        raise ValueError(f"unknown algorithm {spec.algo}")
    task.lower = NULL
    task.average = NULL
    task.upper = NULL
    task.coef = &coef
    cdef int dt = ADAMC_F32 if type_num == cnp.NPY_FLOAT else ADAMC_F64
    _run_task(_kernels.step[spec.algo][dt], &task, n, ADAMC_KIND_STEP(spec.algo, dt), nbytes)
    if spec.aux_mode == 1:
        return aux_next
    return None


cdef object _MISSING = object()


@cython.final
@cython.auto_pickle(False)
cdef class _StepFunction:
    """A stateless step as a compiled callable: parses its arguments like a Python
    function with the signature ``(param, grad, <positional states>, *, step,
    [mu_product,] <hyperparameters>, <keyword states>)`` and runs ``_step_core``.
    Called through CPython's vectorcall protocol (no argument tuple or keyword dict
    is built). adamc.functional gives each instance the name, docstring and
    signature of a function (``__name__``, ``__doc__``, ``__signature__``, ...).

    Parameters
    ----------
    spec : _StepSpec
        The algorithm's argument layout.
    name : str
        Function name, for the messages of bad calls.
    npositional : int
        Number of state arrays that may be passed positionally (a prefix of the
        states; the optional ones default to None).
    defaults : sequence
        Default values of the hyperparameters, in spec order (checked here).
    aux_default : object
        Default of ``mu_product`` (used only with ``aux="mu_product"``); with
        ``aux="prodigy"``, the defaults of the three scalars.
    """
    cdef vectorcallfunc vectorcall     # read by CPython at tp_vectorcall_offset
    cdef _StepSpec spec
    cdef dict index              # argument name -> slot
    cdef list defaults           # slot -> default value or _MISSING (owns the references)
    cdef list slot_names         # slot -> interned name (owns the references) or None
    cdef int npos_max, npos_min, nslots, s_states, s_step, s_aux, s_hyper
    cdef PyObject *slot_default[_MAX_SLOTS]
    cdef PyObject *slot_name[_MAX_SLOTS]
    cdef PyObject *hyper_default[_MAX_ARGS]
    cdef double hyper_default_value[_MAX_ARGS]
    cdef readonly str name
    cdef dict __dict__
    cdef object __weakref__

    def __init__(self, _StepSpec spec, str name, int npositional, defaults, aux_default=1.0):
        cdef int k, ns = spec.nstates
        cdef double x
        if not 0 <= npositional <= ns or len(defaults) != spec.nhyper:
            raise ValueError("bad stateless step layout")
        self.spec = spec
        self.name = name
        self.s_states, self.s_step = 2, 2 + ns
        self.s_aux, self.s_hyper = 3 + ns, 3 + ns + spec.naux
        self.nslots = 3 + ns + spec.naux + spec.nhyper
        names = ["param", "grad", *spec.state_names, "step",
                 *_AUX_NAMES[spec.aux_mode], *spec.names]
        # interned: the keyword names of a call are found by identity first
        names = [None if n is None else sys.intern(n) for n in names]
        self.slot_names = names
        self.defaults = [_MISSING, _MISSING]
        for k in range(ns):
            self.defaults.append(_MISSING if spec.state_flag[k] < 0 else None)
        if spec.aux_mode == _AUX_PRODIGY:
            aux_defaults = list(aux_default)
            if len(aux_defaults) != 3:
                raise ValueError("prodigy: three scalar defaults")
        else:
            aux_defaults = [aux_default if spec.aux_mode == 1 else None]
        self.defaults += [_MISSING, *aux_defaults, *defaults]
        self.npos_max = 2 + npositional
        self.npos_min = 2
        for k in range(npositional):
            if spec.state_flag[k] < 0:
                self.npos_min = 3 + k
        self.index = {n: k for k, n in enumerate(names) if n is not None}
        for k in range(self.nslots):
            self.slot_default[k] = <PyObject *>self.defaults[k]
            self.slot_name[k] = NULL if names[k] is None else <PyObject *>names[k]
        for k in range(spec.nhyper):
            self.hyper_default[k] = self.slot_default[self.s_hyper + k]
            x = _hyper_value(spec.kinds[k], self.defaults[self.s_hyper + k], spec.names[k])
            if x == -2.0:
                raise ValueError(f"the default of {spec.names[k]} must be a number")
            self.hyper_default_value[k] = x
        self.vectorcall = <vectorcallfunc>_step_vectorcall

    def __reduce__(self):
        return self.name  # pickled by reference (a global of its module), like a function

    def __repr__(self):
        return f"<compiled function {getattr(self, '__module__', __name__)}.{self.name}>"

    def __call__(self, *args, **kwargs):
        # only for callers that bypass vectorcall (e.g. type(f).__call__(f, ...))
        return PyVectorcall_Call(self, args, kwargs)

    cdef Py_ssize_t _slot(self, PyObject *key) except -2:
        """The slot of keyword ``key`` (-1: not an argument of this function)."""
        cdef Py_ssize_t k
        cdef PyObject *obj
        for k in range(self.nslots):
            if self.slot_name[k] == key:
                return k
        obj = PyDict_GetItemWithError(self.index, <object>key)  # an equal, other string
        return -1 if obj == NULL else <Py_ssize_t><object>obj

    def _takes(self, Py_ssize_t n, Py_ssize_t kwonly_given):
        # CPython's too_many_positional (Python/ceval.c), word for word
        if self.npos_min == self.npos_max:
            sig = f"{self.npos_max}"
        else:
            sig = f"from {self.npos_min} to {self.npos_max}"
        given = f"{n}"
        if kwonly_given:
            given += (f" positional arguments (and {kwonly_given} keyword-only "
                      f"argument{'s' if kwonly_given != 1 else ''})")
        return f"{self.name}() takes {sig} positional arguments but {given} were given"

    def _missing(self, list missing, bint positional):
        # CPython's missing_arguments and format_missing
        names = [repr(self.slot_names[k]) for k in missing]
        cdef Py_ssize_t last = len(names) - 1   # (no wraparound: no names[-1])
        if last == 0:
            listed = names[0]
        elif last == 1:
            listed = f"{names[0]} and {names[1]}"
        else:
            listed = ", ".join(names[:last]) + f", and {names[last]}"
        kind = "positional" if positional else "keyword-only"
        return (f"{self.name}() missing {len(names)} required {kind} "
                f"argument{'s' if len(names) != 1 else ''}: {listed}")


cdef object _step_vectorcall(object callable, PyObject **args, size_t nargsf,
                             PyObject *kwnames):
    """The vectorcall entry of a _StepFunction: binds the arguments to slots with the
    errors of a Python function of the same signature, in CPython's order (the
    keywords, then the number of positional arguments, then the missing ones), then
    runs the step."""
    cdef _StepFunction self = <_StepFunction>callable
    cdef PyObject *slots[_MAX_SLOTS]
    cdef Py_ssize_t n = PyVectorcall_NARGS(nargsf), k, j, nkw, kwonly_given = 0
    cdef Py_ssize_t nbound = n if n < self.npos_max else self.npos_max
    cdef PyObject *key
    for k in range(nbound):
        slots[k] = args[k]
    for k in range(nbound, self.nslots):
        slots[k] = NULL
    if kwnames != NULL:
        nkw = PyTuple_GET_SIZE(<object>kwnames)
        for k in range(nkw):
            key = PyTuple_GET_ITEM(<object>kwnames, k)
            j = self._slot(key)
            if j < 0:
                raise TypeError(f"{self.name}() got an unexpected keyword argument "
                                f"'{<object>key}'")
            if slots[j] != NULL:
                raise TypeError(f"{self.name}() got multiple values for argument "
                                f"'{<object>key}'")
            slots[j] = args[n + k]
            if j >= self.npos_max:
                kwonly_given += 1
    if n > self.npos_max:
        raise TypeError(self._takes(n, kwonly_given))
    cdef bint missing = False
    for k in range(nbound, self.nslots):
        if slots[k] == NULL:
            slots[k] = self.slot_default[k]
            if slots[k] == <PyObject *>_MISSING:
                missing = True
    if missing:
        for positional in (True, False):
            absent = [k for k in range(self.nslots) if slots[k] == <PyObject *>_MISSING
                      and (k < self.npos_max) == positional]
            if absent:
                raise TypeError(self._missing(absent, positional))
    if self.spec.aux_mode == _AUX_PRODIGY:
        return _prodigy_core(self, <object>slots[0], <object>slots[1], &slots[self.s_states],
                             <object>slots[self.s_step], &slots[self.s_aux],
                             &slots[self.s_hyper])
    return _step_core(self, <object>slots[0], <object>slots[1], &slots[self.s_states],
                      <object>slots[self.s_step], <object>slots[self.s_aux],
                      &slots[self.s_hyper])


cdef _enable_vectorcall():
    """Make CPython call _StepFunction instances through their ``vectorcall`` field
    (Cython has no declaration for it; the class is final, so no subclass inherits
    the flag)."""
    cdef _StepFunction probe = _StepFunction.__new__(_StepFunction)
    cdef _VectorcallType *tp = <_VectorcallType *><void *>_StepFunction
    tp.tp_vectorcall_offset = <char *>&probe.vectorcall - <char *><PyObject *>probe
    tp.tp_flags |= Py_TPFLAGS_HAVE_VECTORCALL


_enable_vectorcall()


cdef int _check_step_disjoint(_StepSpec spec, const char *param, const char *grad,
                              void **states, Py_ssize_t nbytes) except -1:
    """check_disjoint for a stateless step, whose operands (param, then the states,
    NULL where absent) all span ``nbytes`` > 0 bytes."""
    cdef int i, j, n = spec.nstates
    cdef const char *a
    cdef const char *b
    for i in range(-1, n):
        a = param if i < 0 else <const char *>states[i]
        if a == NULL:
            continue
        for j in range(i + 1, n):
            b = <const char *>states[j]
            if b != NULL and a < b + nbytes and b < a + nbytes:
                raise ValueError(f"{'param' if i < 0 else spec.state_names[i]} and "
                                 f"{spec.state_names[j]} share memory; each must be a "
                                 f"separate array")
    for i in range(-1, n):
        a = param if i < 0 else <const char *>states[i]
        if a != NULL and grad < a + nbytes and a < grad + nbytes:
            raise ValueError(f"grad shares memory with "
                             f"{'param' if i < 0 else spec.state_names[i]}, which this step "
                             f"writes; pass a separate array (e.g. grad.copy())")
    return 0


def _unchecked_adam(param, grad, exp_avg, exp_avg_sq):
    """One Adam step (lr 0.1, step 1) over param's size with NO check of the other
    arrays' sizes: .ci/sanitize's canary passes a short exp_avg, and the sanitizer build
    must catch the out-of-bounds access (a clean sanitizer run proves nothing
    otherwise). Never use it elsewhere."""
    cdef adamc_hyper h
    cdef adamc_coef coef
    cdef adamc_task task
    cdef double aux_next
    for a in (param, grad, exp_avg, exp_avg_sq):
        if not cnp.PyArray_Check(a) or cnp.PyArray_TYPE(<cnp.ndarray>a) != cnp.NPY_DOUBLE:
            raise TypeError("float64 arrays only")
    _fill_hyper(&h, dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8))
    cdef int algo = ALGORITHMS["adam"]
    if _prepare_step(algo, &h, 1, adamc_aux_initial(algo), INFINITY, False, &coef,
                     &aux_next) != 0:
        raise ValueError("adam is not an algorithm of the kernels")
    task.param = cnp.PyArray_DATA(<cnp.ndarray>param)
    task.grad = cnp.PyArray_DATA(<cnp.ndarray>grad)
    task.state[0] = cnp.PyArray_DATA(<cnp.ndarray>exp_avg)
    task.state[1] = cnp.PyArray_DATA(<cnp.ndarray>exp_avg_sq)
    task.state[2] = NULL
    task.lower = task.upper = NULL
    task.coef = &coef
    _run_task(_kernels.step[algo][ADAMC_F64], &task, cnp.PyArray_SIZE(<cnp.ndarray>param),
              ADAMC_KIND_STEP(algo, ADAMC_F64), cnp.PyArray_NBYTES(<cnp.ndarray>param))


def _coefficients(str algorithm, dict hyper, int64_t step, double aux):
    """(the bytes of adamc_prepare's coefficients, aux after the step, adamc_steady) for
    one step of an algorithm (tests compare steps beyond a steady one to the bit)."""
    cdef adamc_hyper h
    cdef adamc_coef coef
    cdef double aux_next
    memset(&coef, 0, sizeof(coef))  # (padding included: the bytes are compared)
    _fill_hyper(&h, hyper)
    cdef int algo = ALGORITHMS[algorithm]
    if _prepare_step(algo, &h, step, aux, INFINITY, False, &coef, &aux_next) != 0:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    return ((<char *>&coef)[:sizeof(coef)], aux_next, bool(adamc_steady(algo, &h, step, aux)))
