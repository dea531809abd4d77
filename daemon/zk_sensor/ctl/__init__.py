"""zk-sensorctl and the ZooKeeper exporter: the operator's tools (status, check, config,
switchover, identities), reading and writing the fleet through fleet/ and zk/ alone."""
