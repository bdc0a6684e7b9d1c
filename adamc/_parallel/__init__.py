"""MPI (private; its import paths may change): the collective agreement and errors of
all ranks (``collective``) and the gradient reduction (``reducer``). The public home is
adamc.distributed."""
