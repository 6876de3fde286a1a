"""Suite-wide pytest configuration: hypothesis profiles only.

``ci`` (default) is sized so each property test finds real bugs in seconds;
``thorough`` (``HYPOTHESIS_PROFILE=thorough``) runs thousands of examples.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
