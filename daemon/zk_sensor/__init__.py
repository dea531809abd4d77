"""zk-sensor: a fleet of sensor daemons coordinated by Apache ZooKeeper."""

__version__ = "0.1.0"
