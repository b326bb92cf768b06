"""The fault switch: named policies for the fault proxy between the storage and SeaweedFS.

Only uploads (``PUT``) are disturbed, so the admin, presigned image URLs and reads keep working
while a visitor watches saves being retried, stashed and later delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from example_project.embedded import current_proxy


@dataclass(frozen=True)
class Preset:
    label: str
    description: str
    policy: dict = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "off": Preset("Off", "Every request passes."),
    "flaky": Preset("Flaky",
                    "Half of all upload requests fail (reset or 500); retries usually save them.",
                    {"reset": 0.3, "internal": 0.2}),
    "throttled": Preset("Throttled", "Every upload gets 429 Too Many Requests.",
                        {"throttle_429": 1.0}),
    "outage": Preset("Outage", "Every upload gets 503 Service Unavailable.",
                     {"service_unavailable": 1.0}),
    "timeouts": Preset("Timeouts", "Uploads get no answer until the client gives up.",
                       {"stall": 1.0, "stall_seconds": 30.0}),
    "network": Preset("Network down", "Every upload's connection is reset.", {"reset": 1.0}),
}

_active = {"name": "off"}


class NoProxy(RuntimeError):
    """The storage is not behind the fault proxy (an external S3 endpoint is configured)."""


def apply(name: str) -> Preset:
    """Set the proxy's policy to the preset ``name``."""
    if name not in PRESETS:
        choices = ", ".join(f"{preset.label} ({key})" for key, preset in PRESETS.items())
        raise ValueError(f"Unknown fault preset {name!r}. Choose one of: {choices}."
                         if name else f"No fault preset chosen. Choose one of: {choices}.")
    proxy = current_proxy()
    if proxy is None:
        raise NoProxy("the fault switch needs the embedded S3 (unset S3_ENDPOINT_URL)")
    proxy.clear()
    if PRESETS[name].policy:
        proxy.configure(**PRESETS[name].policy, methods={"PUT"})
    _active["name"] = name
    return PRESETS[name]


def active() -> str:
    return _active["name"] if current_proxy() is not None else "unavailable"


def counts() -> dict[str, int]:
    proxy = current_proxy()
    return dict(proxy.counts) if proxy is not None else {}
