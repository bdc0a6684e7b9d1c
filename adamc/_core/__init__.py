"""The optimizer core (private; its import paths may change): argument checks
(``validation``), the thread configuration (``threads``, ``config``), the optimizer base
class (``optimizer``), the interface adapters use (``port``) and the state format of
snapshots and checkpoints (``format``). The public homes are adamc.optim and
adamc.checkpoint."""
