"""Runner: the study loop (ask -> run -> tell), its budget ledger, tracking to MLflow, quick sweeps."""
