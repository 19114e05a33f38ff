"""The surge benchmark: ``make bench`` runs :mod:`bench.run`."""
