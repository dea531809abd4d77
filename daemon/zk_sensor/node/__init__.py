"""The zk-sensor daemon process: its loop and events, the follower's and the leader's steps,
the courier that delivers rounds, the schedule, the clock, systemd and metrics, and the
command line that starts it."""
