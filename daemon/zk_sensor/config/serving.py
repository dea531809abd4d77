"""What every HTTP endpoint of ours shares: how its listen address is written, and the
Prometheus exposition format it serves."""

from zk_sensor.config.sources import SettingsError

# What prometheus_client's generate_latest writes; newer releases moved CONTENT_TYPE_LATEST
# to the 1.0.0 format, which generate_latest does not write.
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise SettingsError(f"listen {listen!r} must be HOST:PORT") from None
    if not host or not 0 <= number <= 65535:
        raise SettingsError(f"listen {listen!r} must be HOST:PORT")
    return host.strip("[]"), number
