"""The fleet's protocol on top of ZooKeeper: where everything lives (layout), the payloads
(payloads/: one model per znode payload, each decoded totally), the election, the office
and its lease, the barrier and rounds, the outbox, readings and the counter, switchover,
ACLs and the fleet's status. No process lives here: node/ and ctl/ drive these functions,
and they reach ZooKeeper only through zk/."""
