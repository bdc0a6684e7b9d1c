"""The fitting drivers (private; its import paths may change): the SciPy driver
(``minimize``) and its inputs (``problem``, ``batches``, ``lowlevel``), its collective
collaborator for options['comm'] (``minimize_sync``), the minimize_<name> functions
(``methods``) and minimize_many (``many``). The public home is the adamc namespace."""
