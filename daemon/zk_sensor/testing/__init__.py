"""Test harnesses, importable by the tests, the demo and the benchmarks (like kazoo.testing):

- zookeeper: real ZooKeeper servers and ensembles (Debian's package) on loopback;
- proxy: a ZooKeeper-aware TCP proxy that injects faults into one client's conversation;
- memory, memfleet: an in-memory ZooKeeper and a fleet driven on it (the fast tier);
- ports: free loopback ports (the one place that picks them);
- fleet: real zk-sensor daemons, zk-sensorctl, an HTTP receiver, `wait_for`;
- collector: a real zk-collector process and the HTTP calls made to one;
- faults: the fault matrix's timing bounds and its check on what a collector kept;
- nemesis: a seeded schedule of mixed faults against a real fleet (Jepsen-like);
- postgres: a throw-away PostgreSQL server;
- pki: a throw-away certificate authority;
- identities: ZooKeeper digest identities, their files and clients, a namespace under ACLs;
- deploy: the playbook's paths and Ansible rendering its templates on the controller.

Nothing in the product imports this package."""
