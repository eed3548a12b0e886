"""Pub/sub backends: the contract in ``base`` and one module per backend."""
