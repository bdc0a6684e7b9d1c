# Included by adamc/_kernels.pyx (one extension module; see its docstring).

# ---------------------------------------------------------------------------------
# Engine behind the optimizer classes

NONFINITE_POLICIES = ("propagate", "raise", "skip")

from time import sleep as _sleep

cdef extern from *:
    """
    /* Who is this thread (unique among live threads; step() asks at every call): the
       thread pointer is one instruction where the compiler offers it. */
    #if (defined(__x86_64__) || defined(__aarch64__)) && defined(__has_builtin)
    #if __has_builtin(__builtin_thread_pointer)
    #define ADAMC_THREAD_POINTER 1
    #endif
    #endif
    static inline unsigned long adamc_thread_id(void)
    {
    #ifdef ADAMC_THREAD_POINTER
        return (unsigned long)__builtin_thread_pointer();
    #else
        return PyThread_get_thread_ident();
    #endif
    }
    /* fork()s since this module was loaded, counted in the child, and the thread that
       called the last one (the only thread a child of fork() has). */
    static unsigned long adamc_forks = 0, adamc_forking_thread = 0;
    #if defined(__unix__) || defined(__APPLE__)
    #include <pthread.h>
    static void adamc_count_fork(void)
    {
        adamc_forks++;
        adamc_forking_thread = adamc_thread_id();
    }
    static void adamc_watch_forks(void) { pthread_atfork(NULL, NULL, adamc_count_fork); }
    #else
    static void adamc_watch_forks(void) {}
    #endif
    """
    unsigned long adamc_forks, adamc_forking_thread
    void adamc_watch_forks()
    unsigned long adamc_thread_id() nogil

adamc_watch_forks()

# _Engine._busy: who holds the optimizer
cdef enum:
    _IDLE = 0
    _STEPPING = 1  # a step, before it writes anything (schedules, checks)
    _CHANGING = 2  # a slow path that changes the optimizer (load_state_dict, reset, ...)
    _WRITING = 3   # a step writing parameters and state
    _TORN = 4      # forked while another thread wrote: see _Engine._forget_fork

_TORN_MESSAGE = (
    "this process was forked while another thread of its parent was updating this "
    "optimizer (inside step(), load_state_dict() or another method that changes it): "
    "its parameters and state may hold a partly applied update. Restore a saved state "
    "with load_state_dict() (or adamc.load), or call reset(), to use it in this process")

cdef struct Slot:
    PyObject *param          # borrowed: the engine's _params list holds the reference
    void *data               # param's data pointer (checked at every step)
    void *state[3]
    const void *lower
    const void *upper
    void *average            # the weight average (ema), or NULL
    Py_ssize_t size
    Py_ssize_t nbytes
    int type_num
    int dtype_index
    Py_ssize_t group


cdef struct Group:
    adamc_hyper hyper
    adamc_coef coef          # scratch: prepared anew at every step
    int64_t step             # completed steps of this group
    double aux               # scalar state of the algorithm (see adamc_prepare)
    double aux_next          # scratch: aux after this step
    double last_lr           # lr of the last completed step (NaN: none recorded)


@cython.auto_pickle(False)
cdef class _Engine:
    """Stepping machinery shared by the optimizer classes (see adamc.optim).

    The Python subclass builds param_groups and state arrays, then calls _bind();
    step() only reads cached pointers and re-checks what a user could have changed.
    """
    cdef public list param_groups
    cdef int _algo
    cdef Py_ssize_t _nparams, _ngroups
    cdef Slot *_slots
    cdef Group *_groups
    cdef const void **_grad_ptr
    cdef list _params            # flat list of parameter arrays (keeps them alive)
    cdef list _states            # per param: list of 3 state arrays or None
    cdef list _params_lists      # per group: the list object found in group["params"]
    cdef tuple _keys             # hyperparameter keys watched for changes
    cdef object _validate        # validate(group, gi) -> (hyper dict, lr_fn); see _bind
    cdef tuple _state_names      # names of the state slots (error messages)
    cdef list _seen              # per group: list of the objects last validated
    cdef list _lr_fns            # per group: schedule or callable lr, or None
    cdef bint _bounded
    cdef double _max_grad_norm   # <= 0: off
    cdef double _clip_value      # inf: off
    cdef bint _use_external      # _step_reduced: the sum of squares comes from outside
    cdef double _external_sumsq
    cdef int _nonfinite          # index in NONFINITE_POLICIES
    cdef int64_t _step_count
    cdef int64_t _skipped
    cdef int _busy               # _IDLE, _STEPPING, _WRITING, _CHANGING or _TORN
    cdef Py_ssize_t _readers     # reads (state_dict, copies, checkpoints) running or waiting
    cdef unsigned long _owner    # the thread that set _busy
    cdef unsigned long _busy_fork, _readers_fork  # adamc_forks when they were set
    cdef bint _bound
    cdef list _held              # per param: the gradient of the step in progress
    cdef char **_span_lo         # every byte range the kernels write (params and state),
    cdef char **_span_hi         # sorted by start; pairwise disjoint
    cdef Py_ssize_t _nspans
    cdef int _ema_mode           # 0 off, 1 exponential (decay), 2 uniform (running mean)
    cdef double _ema_decay
    cdef int64_t _ema_start      # averaging starts with the step of this number (>= 1)
    cdef int64_t _ema_count      # parameters folded into the average so far
    cdef bint _ema_now           # scratch: this step updates the average

    def __cinit__(self):
        self._clip_value = INFINITY
        self._max_grad_norm = 0.0

    def __dealloc__(self):
        PyMem_Free(self._slots)
        PyMem_Free(self._groups)
        PyMem_Free(self._grad_ptr)
        PyMem_Free(self._span_lo)
        PyMem_Free(self._span_hi)

    # -- weight averaging (the ema option) -------------------------------------------
    def _set_ema(self, int mode, double decay, int64_t start, int64_t count=0):
        """Configure weight averaging (values already checked): mode 0 off, 1 an
        exponential average with ``decay``, 2 the running mean; it starts with step
        ``max(start, 1)``; ``count`` parameters were averaged so far."""
        self._check_idle()
        self._ema_mode, self._ema_decay, self._ema_start, self._ema_count = mode, decay, start, count

    def _ema_state(self):
        """(mode, decay, start, count) of the weight averaging."""
        return self._ema_mode, self._ema_decay, self._ema_start, self._ema_count

    cdef int _prepare_ema(self) except -1:
        """The averaging weight of this step: 1 at the first averaged step (the
        average, still 0, becomes the parameters), then 1 - decay or 1 / (n + 1)."""
        cdef Py_ssize_t gi
        cdef double w
        self._ema_now = self._ema_mode != 0 and self._step_count + 1 >= self._ema_start
        if not self._ema_now:
            return 0
        if self._ema_count == 0:
            w = 1.0
        elif self._ema_mode == 1:
            w = 1.0 - self._ema_decay
        else:
            w = 1.0 / <double>(self._ema_count + 1)
        for gi in range(self._ngroups):
            self._groups[gi].coef.flags |= ADAMC_EMA
            self._groups[gi].coef.ema_weight = w
        return 0

    # -- configuration --------------------------------------------------------------
    @property
    def step_count(self):
        """Number of completed ``step()`` calls (skipped steps excluded)."""
        return self._step_count

    @property
    def skipped_steps(self):
        """Number of steps skipped by ``nonfinite="skip"``."""
        return self._skipped

    @property
    def max_grad_norm(self):
        """Clip the global L2 norm of the gradients to this value (None: off)."""
        return None if self._max_grad_norm <= 0 else self._max_grad_norm

    @max_grad_norm.setter
    def max_grad_norm(self, value):
        self._check_idle()
        self._max_grad_norm = check_max_grad_norm(value)

    @property
    def clip_value(self):
        """Clamp every gradient element to [-clip_value, clip_value] (None: off)."""
        return None if self._clip_value == INFINITY else self._clip_value

    @clip_value.setter
    def clip_value(self, value):
        self._check_idle()
        self._clip_value = check_clip_value(value)

    @property
    def nonfinite(self):
        """What a NaN or infinity in the gradients does: "propagate" (into the
        parameters, like torch), "raise" (FloatingPointError, nothing updated) or
        "skip" (the step is skipped and counted in ``skipped_steps``)."""
        return NONFINITE_POLICIES[self._nonfinite]

    @nonfinite.setter
    def nonfinite(self, value):
        self._check_idle()
        if value not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {', '.join(map(repr, NONFINITE_POLICIES))}, "
                             f"got {value!r}")
        self._nonfinite = NONFINITE_POLICIES.index(value)

    def _bind(self, int algo, tuple keys, list params, list states, list group_index,
              lower=None, upper=None, validate=None, tuple state_names=(), averages=None):
        """(Re)build the cached view of param_groups. ``states[i]`` lists the 3 state
        slots of params[i] (None where unused); ``lower``/``upper`` optional per-param
        bound arrays. Arrays must already be checked. Existing groups keep their step
        counts and scalar state; new ones start fresh.

        The engine's interface to the layer above is explicit: ``validate(group, gi)
        -> (hyperparameters, lr schedule or None)`` checks a group whose watched keys
        changed (the engine never calls methods of its subclasses), and
        ``state_names`` names the state slots in error messages."""
        self._check_idle()
        cdef Py_ssize_t i, k, n = len(params), ng = len(self.param_groups)
        cdef Slot *slots = <Slot *>PyMem_Calloc(max(n, 1), sizeof(Slot))
        cdef Group *groups = <Group *>PyMem_Calloc(max(ng, 1), sizeof(Group))
        cdef const void **gp = <const void **>PyMem_Calloc(max(n, 1), sizeof(void *))
        if slots == NULL or groups == NULL or gp == NULL:
            PyMem_Free(slots)
            PyMem_Free(groups)
            PyMem_Free(gp)
            raise MemoryError("cannot allocate the optimizer's bookkeeping")
        cdef cnp.ndarray a
        for i in range(n):
            a = <cnp.ndarray>params[i]
            slots[i].param = <PyObject *>a
            slots[i].data = cnp.PyArray_DATA(a)
            slots[i].size = cnp.PyArray_SIZE(a)
            slots[i].nbytes = cnp.PyArray_NBYTES(a)
            slots[i].type_num = cnp.PyArray_TYPE(a)
            slots[i].dtype_index = ADAMC_F32 if slots[i].type_num == cnp.NPY_FLOAT else ADAMC_F64
            slots[i].group = group_index[i]
            for k in range(3):
                slots[i].state[k] = _data_or_null(states[i][k])
            slots[i].lower = NULL if lower is None else _data_or_null(lower[i])
            slots[i].upper = NULL if upper is None else _data_or_null(upper[i])
            slots[i].average = NULL if averages is None else _data_or_null(averages[i])
        for i in range(ng):
            if i < self._ngroups:
                groups[i].step = self._groups[i].step
                groups[i].aux = self._groups[i].aux
                groups[i].last_lr = self._groups[i].last_lr
            else:
                groups[i].aux = adamc_aux_initial(algo)
                groups[i].last_lr = NAN
        written = list(params) + [x for st in states for x in st if x is not None]
        if averages is not None:
            written += [x for x in averages if x is not None]
        spans = sorted((<Py_ssize_t>cnp.PyArray_DATA(<cnp.ndarray>a), cnp.PyArray_NBYTES(<cnp.ndarray>a))
                       for a in written if cnp.PyArray_NBYTES(<cnp.ndarray>a) > 0)
        cdef char **lo_ = <char **>PyMem_Calloc(max(len(spans), 1), sizeof(char *))
        cdef char **hi_ = <char **>PyMem_Calloc(max(len(spans), 1), sizeof(char *))
        if lo_ == NULL or hi_ == NULL:
            PyMem_Free(slots)
            PyMem_Free(groups)
            PyMem_Free(gp)
            PyMem_Free(lo_)
            PyMem_Free(hi_)
            raise MemoryError("cannot allocate the optimizer's bookkeeping")
        for k, (start, nbytes) in enumerate(spans):
            lo_[k] = <char *><Py_ssize_t>start
            hi_[k] = <char *><Py_ssize_t>start + <Py_ssize_t>nbytes
        PyMem_Free(self._slots)
        PyMem_Free(self._groups)
        PyMem_Free(self._grad_ptr)
        PyMem_Free(self._span_lo)
        PyMem_Free(self._span_hi)
        self._slots, self._groups, self._grad_ptr = slots, groups, gp
        self._span_lo, self._span_hi, self._nspans = lo_, hi_, len(spans)
        self._held = [None] * n
        self._algo = algo
        self._keys = keys
        self._validate = validate
        self._state_names = state_names
        self._nparams, self._ngroups = n, ng
        self._params = list(params)
        self._states = [list(s) for s in states]
        self._bounded = lower is not None
        self._params_lists = [g["params"] for g in self.param_groups]
        self._seen = [[None] * len(keys) for _ in range(ng)]
        self._lr_fns = [None] * ng
        self._bound = True

    # -- state access for the Python layer ------------------------------------------
    def _group_steps(self):
        return [self._groups[i].step for i in range(self._ngroups)]

    def _group_last_lr(self):
        """Per group: the lr of its last completed step, NaN where none was recorded
        (no step yet, or the counters were set by _set_counters since)."""
        return [self._groups[i].last_lr for i in range(self._ngroups)]

    def _group_aux(self):
        return [self._groups[i].aux for i in range(self._ngroups)]

    def _set_counters(self, steps, aux, step_count, skipped=None):
        """Set every group's step count and scalar state, and the step counters (the
        values must already be checked; the lengths are checked here)."""
        cdef Py_ssize_t i
        if len(steps) != self._ngroups or len(aux) != self._ngroups:
            raise ValueError(f"expected {self._ngroups} step counts and scalar states, got "
                             f"{len(steps)} and {len(aux)}")
        for i in range(self._ngroups):
            self._groups[i].step = steps[i]
            self._groups[i].aux = aux[i]
            self._groups[i].last_lr = NAN  # recorded by a step no longer counted
        self._step_count = step_count
        if skipped is not None:
            self._skipped = skipped

    def _aux_initial(self):
        return adamc_aux_initial(self._algo)

    # -- who may use the optimizer: steps, changes and reads ------------------------
    # One step or one change (a slow path that writes) at a time, refused otherwise:
    # they write the same arrays. Reads (state_dict, copies, checkpoints) run together,
    # a read waits for the step or change running in another thread, and a step or
    # change waits for the reads. Plain ints, changed with the GIL held (_WRITING
    # without it, by the stepping thread): step() pays three loads and five stores.

    def _check_idle(self):
        """Refuse to change a setting while a step runs (in this thread: from inside
        it)."""
        if self._busy == _STEPPING or self._busy == _WRITING:
            self._forget_fork()
            if self._busy == _STEPPING or self._busy == _WRITING:
                raise self._in_use_error(None)

    cdef int _forget_fork(self) except -1:
        """In a child of fork(), only the thread that forked exists: what the parent's
        other threads held is stale. Their reads and their steps that had not written
        yet are forgotten (the step then never happened here); a step or change that
        was writing leaves the optimizer torn until its state is replaced."""
        if self._readers and self._readers_fork != adamc_forks:
            self._readers = 0
        if (self._busy != _IDLE and self._busy != _TORN and self._busy_fork != adamc_forks
                and self._owner != adamc_forking_thread):
            self._busy = _IDLE if self._busy == _STEPPING else _TORN
        return 0

    def _in_use_error(self, what):
        """The RuntimeError of ``what`` (a call, or None for a setting) finding the
        optimizer held (see _busy)."""
        cdef bint here = self._owner == adamc_thread_id()
        if self._busy == _TORN:
            return RuntimeError(_TORN_MESSAGE)
        call = "this call" if what is None else what
        if self._busy == _CHANGING:
            if here:
                return RuntimeError(f"the optimizer is being modified in this thread: "
                                    f"{call} was made from inside load_state_dict, reset or "
                                    f"another method that changes it")
            return RuntimeError("the optimizer is being modified in another thread")
        if here:
            return RuntimeError(f"{call} was made from inside step() of the same optimizer, "
                                f"in the same thread (a re-entrant call, e.g. from its lr "
                                f"schedule): the optimizer is stepping; make it after "
                                f"step() returns")
        if what == "step()":
            return RuntimeError("step() is already running on this optimizer in another "
                                "thread; an optimizer must not be stepped concurrently")
        return RuntimeError("the optimizer is stepping in another thread")

    cdef int _wait_to_step(self) except -1:
        """step() found the optimizer held: wait for reads in other threads, raise
        for the rest."""
        cdef double pause = 1e-5
        while True:
            self._forget_fork()
            if self._busy != _IDLE:
                raise self._in_use_error("step()")
            if self._readers == 0:
                return 0
            _sleep(pause)  # releases the GIL; reads end (they only copy)
            pause = min(2 * pause, 1e-3)

    def _acquire(self, bint recover=False):
        """Keep step() and reads out while a slow path (load_state_dict, reset, ...)
        changes the optimizer; raises if a step or another change is running, waits
        for reads in other threads. ``recover``: the change replaces the whole state,
        which a torn optimizer (see _forget_fork) allows. Returns whether it was torn."""
        cdef double pause = 1e-5
        cdef bint torn
        while True:
            self._forget_fork()
            torn = self._busy == _TORN
            if self._busy != _IDLE and not (torn and recover):
                raise self._in_use_error(None)
            if self._readers == 0:
                break
            _sleep(pause)
            pause = min(2 * pause, 1e-3)
        self._busy = _CHANGING
        self._owner = adamc_thread_id()
        self._busy_fork = adamc_forks
        return torn

    def _release(self, bint torn=False):
        """End a change (``torn``: it failed on a torn optimizer, which stays torn)."""
        self._busy = _TORN if torn else _IDLE

    def _acquire_read(self):
        """Keep steps and changes out while this thread reads the optimizer (other
        reads may run too): waits for the step or change running in another thread;
        raises inside a step or change of this thread, or on a torn optimizer."""
        cdef double pause = 1e-5
        self._forget_fork()
        self._readers += 1  # from here on a step that has not started waits for us
        self._readers_fork = adamc_forks
        try:
            while self._busy != _IDLE:
                if self._busy == _TORN or self._owner == adamc_thread_id():
                    raise self._in_use_error(None)
                _sleep(pause)  # the step or change in another thread ends
                pause = min(2 * pause, 1e-3)
        except BaseException:
            self._readers -= 1
            raise

    def _release_read(self):
        if self._readers > 0:
            self._readers -= 1

    # -- the step -------------------------------------------------------------------
    def step(self, grads):
        """Update every parameter in place from its gradient.

        Parameters
        ----------
        grads : ndarray or sequence of ndarray
            One gradient per parameter, in the order of ``param_groups`` (a single
            array when the optimizer has one parameter). Each must have its
            parameter's dtype and shape and be C-contiguous.

        Raises
        ------
        TypeError, ValueError
            On a bad gradient or hyperparameter, before anything is modified.
        FloatingPointError
            With ``nonfinite="raise"``, when a gradient holds a NaN or infinity
            (nothing is modified).
        RuntimeError
            When the optimizer is already stepping in another thread, or being
            modified (load_state_dict, reset, ...), or when called from inside its own
            step (e.g. from an lr schedule), or in a child of ``fork()`` when another
            thread of the parent was updating it then (see docs/reliability.md). A
            ``state_dict()`` running in another thread is waited for.
        """
        if self._busy or self._readers:
            self._wait_to_step()
        if not self._bound:
            raise RuntimeError("optimizer is not initialised (call super().__init__)")
        self._busy = _STEPPING
        self._owner = adamc_thread_id()
        self._busy_fork = adamc_forks
        try:
            # User code (schedules, hyperparameter validation) runs first; the arrays
            # are read and checked after it, and held until the kernels are done.
            self._prepare()
            self._collect(grads)
            self._update()
        finally:
            self._busy = _IDLE
            self._release_grads()

    def _step_reduced(self, grads, double sumsq):
        """step() with the sum of squares of the (clamped) gradients given instead of
        computed: the interface through which adamc.distributed clips by the norm of
        the gradient of all ranks (each rank holding a shard of it). With
        max_grad_norm, the gradients are scaled by ``max_grad_norm / (sqrt(sumsq) +
        1e-6)`` when that is below 1, inside the kernels, as step() does."""
        if not (sumsq >= 0.0):
            raise ValueError(f"sumsq must be a number >= 0, got {sumsq!r}")
        self._use_external = True
        self._external_sumsq = sumsq
        try:
            self.step(grads)
        finally:
            self._use_external = False

    cdef int _release_grads(self) except -1:
        cdef Py_ssize_t i
        cdef list held = self._held
        if held is not None:
            for i in range(len(held)):
                held[i] = None
        return 0

    cdef int _collect(self, object grads) except -1:
        """Check the structure of param_groups, every parameter and every gradient;
        store gradient pointers and hold the gradients until the step ends."""
        cdef Py_ssize_t i, n = self._nparams
        cdef object g, p
        cdef cnp.ndarray pa
        cdef bint is_list
        cdef list held = self._held
        if cnp.PyArray_Check(grads):
            if n != 1:
                raise ValueError(f"grads is a single array but the optimizer has {n} "
                                 f"parameters; pass a list of {n} arrays")
            seq = None
        elif isinstance(grads, (list, tuple)):
            if n == 1 and len(grads) and isinstance(grads[0], (int, float, np.number)):
                raise TypeError("grads is a sequence of numbers; pass the gradient as an "
                                "array: np.asarray(grad, dtype=param.dtype)")
            if len(grads) != n:
                raise ValueError(f"grads has {len(grads)} arrays but the optimizer has {n} "
                                 f"parameters")
            seq = grads
        elif callable(grads):
            raise TypeError("step() takes the gradients, not a closure: adamc does not "
                            "differentiate, so compute the loss and gradient yourself "
                            "and pass the gradient, e.g. loss, grad = f_and_grad(x); "
                            "opt.step(grad) (a list of arrays for several parameters)")
        else:
            raise TypeError(f"grads must be an ndarray or a list of ndarrays, got "
                            f"{type(grads).__name__}")
        self._check_structure()
        is_list = type(seq) is list
        for i in range(n):
            p = <object>self._slots[i].param
            pa = <cnp.ndarray>p
            if (cnp.PyArray_TYPE(pa) != self._slots[i].type_num
                    or cnp.PyArray_SIZE(pa) != self._slots[i].size
                    or cnp.PyArray_DATA(pa) != self._slots[i].data
                    or (cnp.PyArray_FLAGS(pa) & _REQ_WRITE) != _REQ_WRITE):
                raise self._changed_param_error(i)
            if seq is None:
                g = grads
            elif is_list:
                g = (<list>seq)[i]
            else:
                g = seq[i]
            held[i] = g
            if not _operand_ok(g, self._slots[i].type_num, cnp.PyArray_NDIM(pa),
                               cnp.PyArray_DIMS(pa), _REQ_READ):
                raise _operand_error(g, self._grad_name(i), p, self._param_name(i), False)
            if self._writes_into(g):
                raise ValueError(f"{self._grad_name(i)} shares memory with "
                                 f"{self._written_name(g)}, which this step writes; pass a "
                                 f"separate array (e.g. {self._grad_name(i)}.copy())")
            self._grad_ptr[i] = cnp.PyArray_DATA(<cnp.ndarray>g)
        return 0

    def _written_name(self, g):
        """Name of the parameter or state array whose memory g overlaps (error path)."""
        keys = self._state_names
        for i, p in enumerate(self._params):
            if _overlap(g, p):
                return self._param_name(i)
            for k, st in enumerate(<list>self._states[i]):
                if st is not None and _overlap(g, st):
                    key = keys[k] if k < len(keys) else f"state {k}"
                    return f"the {key} state of {self._param_name(i)}"
        return "an array this step writes"

    cdef bint _writes_into(self, object g) noexcept:
        """Whether g's memory overlaps anything the kernels write: binary search of the
        sorted, disjoint spans of all parameters and state arrays."""
        cdef char *q = cnp.PyArray_BYTES(<cnp.ndarray>g)
        cdef char *q_end = q + cnp.PyArray_NBYTES(<cnp.ndarray>g)
        cdef Py_ssize_t lo = 0, hi = self._nspans, mid
        if q == q_end:
            return False
        while lo < hi:  # first span that ends after q
            mid = (lo + hi) // 2
            if self._span_hi[mid] <= q:
                lo = mid + 1
            else:
                hi = mid
        return lo < self._nspans and self._span_lo[lo] < q_end

    cdef int _check_structure(self) except -1:
        """Detect edits of param_groups that the cached pointers cannot follow."""
        cdef Py_ssize_t gi, j, k = 0
        cdef PyObject *obj
        groups = self.param_groups
        if type(groups) is not list or len(<list>groups) != self._ngroups:
            raise ValueError("param_groups was resized or replaced; use add_param_group() "
                             "to add parameters")
        for gi in range(self._ngroups):
            group = (<list>groups)[gi]
            if type(group) is not dict:
                raise TypeError(f"param_groups[{gi}] must be a dict")
            obj = PyDict_GetItemWithError(group, "params")
            if obj == NULL or <object>obj is not self._params_lists[gi]:
                raise ValueError(f"param_groups[{gi}]['params'] was replaced; create a new "
                                 f"optimizer (or use add_param_group) for new parameters")
            plist = <object>obj
            for j in range(len(plist)):
                if k >= self._nparams or plist[j] is not <object>self._slots[k].param:
                    raise ValueError(f"param_groups[{gi}]['params'] was modified; create a "
                                     f"new optimizer for new parameters")
                k += 1
        if k != self._nparams:
            raise ValueError("param_groups[...]['params'] was modified; create a new "
                             "optimizer for new parameters")
        return 0

    cdef object _changed_param_error(self, Py_ssize_t i):
        p = <object>self._slots[i].param
        name = self._param_name(i)
        if cnp.PyArray_SIZE(<cnp.ndarray>p) != self._slots[i].size or \
                cnp.PyArray_TYPE(<cnp.ndarray>p) != self._slots[i].type_num or \
                cnp.PyArray_DATA(<cnp.ndarray>p) != self._slots[i].data:
            return ValueError(f"{name} changed its dtype, size or memory since the "
                              f"optimizer was created")
        return _operand_error(p, name, None, "", True)

    def _param_name(self, Py_ssize_t i):
        return "param" if self._nparams == 1 else f"params[{i}]"

    def _grad_name(self, Py_ssize_t i):
        return "grad" if self._nparams == 1 else f"grads[{i}]"

    cdef int _prepare(self) except -1:
        """Read each group's hyperparameters (re-validating the ones that changed) and
        prepare its coefficients for this step. Writes only per-step scratch."""
        cdef Py_ssize_t gi, k, nk = len(self._keys)
        cdef PyObject *obj
        cdef list seen
        cdef Group *grp
        groups = self.param_groups
        for gi in range(self._ngroups):
            # checked at every group: a schedule or a validator may have edited the list
            if type(groups) is not list or len(<list>groups) != self._ngroups:
                raise ValueError("param_groups was resized or replaced; use "
                                 "add_param_group() to add parameters")
            group = (<list>groups)[gi]
            if type(group) is not dict:
                raise TypeError(f"param_groups[{gi}] must be a dict")
            seen = <list>self._seen[gi]
            for k in range(nk):
                obj = PyDict_GetItemWithError(group, (<tuple>self._keys)[k])
                if obj == NULL or <object>obj is not seen[k]:
                    self._refresh(gi)
                    break
            grp = &self._groups[gi]
            fn = self._lr_fns[gi]
            if fn is not None:
                grp.hyper.lr = _lr_at(fn, grp.step + 1, gi)
            if self._prepare_coef(gi) != 0:
                raise ValueError(f"unknown algorithm {self._algo}")
        self._prepare_ema()
        return 0

    cdef int _prepare_coef(self, Py_ssize_t gi) noexcept nogil:
        """The coefficients of group gi's next step from its hyperparameters (lr
        included, already set)."""
        cdef Group *grp = &self._groups[gi]
        return self._prepare_coefs(gi, NULL, 1, &grp.coef, &grp.aux_next)

    cdef int _prepare_coefs(self, Py_ssize_t gi, const double *lrs, Py_ssize_t count,
                            adamc_coef *coefs, double *aux_after) noexcept nogil:
        """The coefficients of group gi's next `count` steps (step k's lr lrs[k], or the
        group's lr when lrs is NULL) and the scalar state after each; the group itself
        is unchanged. The compiled minimize loop prepares blocks of steps ahead without
        the GIL: adamc_prepare's pow calls are then independent of each other and of the
        steps, instead of on each step's critical path."""
        cdef Group *grp = &self._groups[gi]
        cdef adamc_hyper h = grp.hyper
        cdef double aux = grp.aux
        cdef Py_ssize_t k
        for k in range(count):
            if lrs != NULL:
                h.lr = lrs[k]
            if _prepare_step(self._algo, &h, grp.step + 1 + k, aux, self._clip_value,
                             self._bounded, &coefs[k], &aux) != 0:
                return -1
            aux_after[k] = aux
        return 0

    cdef int _refresh(self, Py_ssize_t gi) except -1:
        """Validate group gi's hyperparameters (with the validate callable given to
        _bind) and cache them; only validated values reach the Group struct."""
        group = self.param_groups[gi]
        if self._validate is None:
            raise RuntimeError("optimizer is not initialised (call super().__init__)")
        hyper, lr_fn = self._validate(group, gi)
        _fill_hyper(&self._groups[gi].hyper, hyper)
        self._lr_fns[gi] = lr_fn
        self._seen[gi] = [group.get(k) for k in self._keys]
        return 0

    cdef int _update(self) except -1:
        cdef Py_ssize_t total = self.drive_total_bytes()
        cdef Py_ssize_t bad = -1
        if total >= _nogil_min_bytes:
            with nogil:
                adamc_enter()
                bad = self._run(total)
                adamc_leave()
        else:
            _enter_holding_gil()
            bad = self._run(total)
            adamc_leave()
        if bad >= 0:
            if self._nonfinite == 2:
                self._skipped += 1
                return 0
            self._raise_nonfinite(bad)
        self._advance()
        return 0

    cdef void _advance(self) noexcept nogil:
        """Count a completed step (every group's step and scalar state)."""
        cdef Py_ssize_t i
        for i in range(self._ngroups):
            self._groups[i].step += 1
            self._groups[i].aux = self._groups[i].aux_next
            self._groups[i].last_lr = self._groups[i].hyper.lr
        self._step_count += 1
        if self._ema_now:
            self._ema_count += 1

    cdef Py_ssize_t _run(self, Py_ssize_t total) noexcept nogil:
        """The whole update: optional scan for non-finite gradients (returns the
        index of the first offending parameter, nothing updated), optional global
        norm, then one kernel call per parameter."""
        cdef Py_ssize_t i
        cdef adamc_task task
        cdef Slot *s
        cdef const adamc_kernels *kern = _kernels
        if self._nonfinite != 0:
            for i in range(self._nparams):
                s = &self._slots[i]
                if kern.first_nonfinite[s.dtype_index](self._grad_ptr[i], s.size) >= 0:
                    return i
        if self._max_grad_norm > 0:
            self._clip_global_norm(total)
        self._busy = _WRITING
        for i in range(self._nparams):
            s = &self._slots[i]
            task.param = s.data
            task.grad = self._grad_ptr[i]
            task.state[0] = s.state[0]
            task.state[1] = s.state[1]
            task.state[2] = s.state[2]
            task.lower = s.lower
            task.upper = s.upper
            task.average = s.average
            task.coef = &self._groups[s.group].coef
            adamc_run(kern.step[self._algo][s.dtype_index], &task, s.size,
                      ADAMC_KIND_STEP(self._algo, s.dtype_index), s.nbytes)
        return -1

    cdef void _clip_global_norm(self, Py_ssize_t total) noexcept nogil:
        """Clip the gradients by their global norm (max_grad_norm > 0): the factor of
        _norm_factor in every group's prepared grad_scale. The sum of squares is the
        one given from outside (_step_reduced) or that of every gradient (total: the
        bytes of the parameters)."""
        cdef Py_ssize_t i
        cdef Slot *s
        cdef double sumsq = 0.0, factor
        if self._use_external:
            sumsq = self._external_sumsq
        else:
            for i in range(self._nparams):
                s = &self._slots[i]
                sumsq += adamc_sum_squares(_kernels.sumsq[s.dtype_index], self._grad_ptr[i],
                                           s.size, self._clip_value,
                                           ADAMC_KIND_SUMSQ(s.dtype_index), total)
        factor = _norm_factor(self._max_grad_norm, sumsq)
        for i in range(self._ngroups):
            self._groups[i].coef.grad_scale *= factor

    cdef int _raise_nonfinite(self, Py_ssize_t i) except -1:
        cdef Slot *s = &self._slots[i]
        cdef Py_ssize_t flat = _kernels.first_nonfinite[s.dtype_index](self._grad_ptr[i], s.size)
        cdef double value = (<const float *>self._grad_ptr[i])[flat] if s.dtype_index == ADAMC_F32 \
            else (<const double *>self._grad_ptr[i])[flat]
        shape = (<object>s.param).shape
        index = tuple(int(j) for j in np.unravel_index(flat, shape)) if len(shape) > 1 else flat
        raise FloatingPointError(
            f"{self._grad_name(i)} holds {value} at index {index}; nothing was updated "
            f"(nonfinite='raise')")

    # -- The driver interface -----------------------------------------------------------
    # What a driver outside this class (minimize's compiled loop, _minimize_loop.pxi)
    # uses of an engine: these methods only, never the private members above
    # (tests/test_layers.py checks). Final: called directly, inlined by the compiler.

    @cython.final
    cdef int drive_step(self, object g) except -1:
        """step(g) with every check step() makes (the engine's own path)."""
        if self._busy:
            raise RuntimeError("the optimizer of this minimize run is in use elsewhere")
        self._busy = _STEPPING
        try:
            self._prepare()
            self._collect(g)
            self._update()
        finally:
            self._busy = _IDLE
            self._release_grads()
        return 0

    @cython.final
    cdef bint drive_compiled_ok(self, const void *x) noexcept:
        """Whether a compiled loop may step this engine's parameters without Python:
        one parameter (at x) in one group, the default non-finite policy, its own
        norm, no weight averaging. (Prodigy's and schedule-free's engines do more
        than the compiled part: the driver checks their types.)"""
        return (self._bound and self._nparams == 1 and self._ngroups == 1
                and self._nonfinite == 0 and self._slots[0].data == x
                and not self._use_external and self._ema_mode == 0)

    @cython.final
    cdef int drive_validate(self, object g) except -1:
        """The checks of step() on gradient g and of the group's hyperparameters,
        once, without stepping."""
        self._collect(g)
        self._release_grads()
        self._refresh(0)
        return 0

    @cython.final
    cdef int drive_refresh(self) except -1:
        """Read the group's hyperparameters again (after a driver changed its lr)."""
        return self._refresh(0)

    @cython.final
    cdef object drive_schedule(self):
        """The group's lr schedule, or None when its lr is a number."""
        return self._lr_fns[0]

    @cython.final
    cdef inline Group *drive_group(self) noexcept nogil:
        return &self._groups[0]

    @cython.final
    cdef inline const Slot *drive_slot(self) noexcept nogil:
        return &self._slots[0]

    @cython.final
    cdef inline int drive_algorithm(self) noexcept nogil:
        return self._algo

    @cython.final
    cdef inline bint drive_clips_norm(self) noexcept nogil:
        return self._max_grad_norm > 0

    @cython.final
    cdef Py_ssize_t drive_total_bytes(self) noexcept nogil:
        """The bytes of every parameter (the pool's measure of a step's work)."""
        cdef Py_ssize_t i, total = 0
        for i in range(self._nparams):
            total += self._slots[i].nbytes
        return total

    @cython.final
    cdef inline int drive_prepare(self, const double *lrs, Py_ssize_t count,
                                  adamc_coef *coefs, double *aux_after) noexcept nogil:
        """The coefficients of the group's next count steps (see _prepare_coefs)."""
        return self._prepare_coefs(0, lrs, count, coefs, aux_after)

    @cython.final
    cdef inline void drive_begin(self, const void *grad) noexcept nogil:
        """A compiled step starts (grad: its gradient, for drive_run; NULL when the
        driver calls the kernel itself)."""
        if grad != NULL:
            self._grad_ptr[0] = grad
        self._busy = _STEPPING

    @cython.final
    cdef inline void drive_run(self, Py_ssize_t total) noexcept nogil:
        self._run(total)

    @cython.final
    cdef inline void drive_end(self) noexcept nogil:
        """A compiled step is done: counted, the engine free again."""
        self._busy = _IDLE
        self._advance()
