"""Helpers for tests, the way `mitmproxy.test` serves mitmproxy: flow builders,
an injectable clock, and a runner that drives flows through the bundle over
mitmproxy's real addon manager."""
