"""``stowage bench``: storage benchmarks with fio in pods (see command.py; rules BN1-BN29)."""
