"""The ZooKeeper client wall: the only package that imports kazoo.

Everything above it (fleet/, node/, ctl/, the collector's fence) talks to ZooKeeper
through `Zk` (every call with a deadline, three outcomes: done, failed, unknown), the
handler the daemon runs on, and `ZkAccess` (credentials and TLS)."""
