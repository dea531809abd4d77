"""Test harnesses, importable by the tests, the demo and the benchmarks (like kazoo.testing):
real ZooKeeper servers on free loopback ports, a fault-injecting proxy, a throwaway PKI,
PostgreSQL servers, and wrappers around real daemon and collector processes.

Nothing in the product imports this package."""
