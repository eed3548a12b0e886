"""Cluster-safe services for Django: cache, pub/sub, sync messages, an event
queue and distributed locks, each with an embedded default and a cluster
backend."""
